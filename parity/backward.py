"""Error introduced vs inherited per stage, backward: each PyTorch stage fed the
legacy's input to it and the legacy's upstream gradient, and the gradient it
passes on to its input compared with the legacy's.

The legacy side: one eager trainer call under a `GradientTape`, every stage's
input and output tensors captured (`parity.capture.keras_hooks` with
`keep_tensors`), then the total loss's gradient with respect to each of them:
the upstream gradient a stage receives (d loss / d output) and the one it
passes on (d loss / d input). Plain arrays, recorded once.

The PyTorch side: each stage module re-run alone on the legacy's input, with
the other arguments (masks) it received in the port's own real forward
(captured by a pre-hook), backpropagating the legacy's upstream gradient. The
difference between its input gradient and the legacy's is the backward error
that stage introduces by itself. Shared layers are called several times per
forward, so per-call parameter gradients do not exist on the legacy side;
parameter gradients are compared whole by `parity.gradient_parity`.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from parity.capture import stage_site, torch_stage_modules
from parity.compare import Comparison, compare_arrays
from parity.forward import stage_mask


@dataclass
class LegacyBackward:
    """The legacy's per-stage tensors and gradients of the total loss, as arrays (stages with a float input)."""

    stage_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    upstream: dict[str, np.ndarray] = field(default_factory=dict)  # d loss / d stage output
    input_gradients: dict[str, np.ndarray] = field(default_factory=dict)  # d loss / d stage input
    order: list[str] = field(default_factory=list)


def legacy_backward(tf_model: Any, inputs: Mapping[str, Any], targets: Mapping[str, Any]) -> LegacyBackward:
    """One eager legacy forward + backward of the total loss, every stage's gradients recorded."""
    from legacy_keras._tf import tf
    from parity.capture import keras_hooks
    from parity.tf_side import _objective_losses, tf_inputs, tf_targets

    batch = tf_inputs(inputs)
    tf_target = tf_targets(targets, tf_model.question_encoder.config.hidden_size)
    with tf.GradientTape() as tape, keras_hooks(tf_model, keep_tensors=True) as capture:
        loss = tf.add_n(list(_objective_losses(tf_model(batch, training=False), tf_target).values()))
    names = [name for name in capture.order if capture.tensors_in.get(name) is not None]
    tensors = [capture.tensors_out[name] for name in names] + [capture.tensors_in[name] for name in names]
    grads = tape.gradient(loss, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    result = LegacyBackward(order=names)
    for index, name in enumerate(names):
        result.stage_inputs[name] = np.asarray(capture.tensors_in[name])
        result.upstream[name] = np.asarray(grads[index])
        result.input_gradients[name] = np.asarray(grads[len(names) + index])
    return result


@contextlib.contextmanager
def _recorded_arguments(model: Any) -> Iterator[dict[str, tuple[tuple, dict]]]:
    """Stage name -> the (args, kwargs) the port's real forward called it with."""
    from parity.capture import _Recorder, _sites

    modules = torch_stage_modules(model)
    recorder = _Recorder(_sites(len(model.question_encoder.encoder.encoder.layer)), lambda value: value)
    calls: dict[str, tuple[tuple, dict]] = {}

    def before(site, module, args, kwargs):
        calls[recorder.name(site)] = (args, kwargs)

    handles = [module.register_forward_pre_hook(functools.partial(before, site), with_kwargs=True)
               for site, module in modules.items()]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def introduced_backward(pt_model: Any, legacy: LegacyBackward, inputs: Mapping[str, Any],
                        tolerance: float) -> list[Comparison]:
    """Per stage: the port's input gradient, given the legacy's input and upstream gradient, vs the legacy's.

    Compared on real tokens; the relative scale is the legacy's largest input gradient of that stage.
    """
    with torch.no_grad(), _recorded_arguments(pt_model) as calls:
        pt_model(inputs)
    modules = torch_stage_modules(pt_model)
    results = []
    for name in legacy.order:
        args, kwargs = calls[name]
        device = next(pt_model.parameters()).device
        stage_input = torch.tensor(legacy.stage_inputs[name], dtype=torch.float32, device=device, requires_grad=True)
        output = modules[stage_site(name)](stage_input, *args[1:], **kwargs)
        output = output[0] if isinstance(output, (tuple, list)) else output
        output.backward(torch.tensor(np.array(legacy.upstream[name]), dtype=output.dtype, device=device))
        reference = legacy.input_gradients[name]
        scale = max(float(np.abs(reference).max(initial=0.0)), np.finfo(np.float32).tiny)
        comparison = compare_arrays(name, stage_input.grad.cpu().numpy() / scale, reference / scale, tolerance,
                                    stage_mask(name, inputs))
        results.append(comparison)
    return results
