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

from parity.agreement import magnitude_scale
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
    return legacy_backward_of(tape, loss, capture)


def backward_stages(capture: Any) -> list[str]:
    """The stages of a kept-tensors capture whose input is a float tensor (embeddings take token ids)."""
    return [name for name in capture.order if capture.tensors_in.get(name) is not None]


def legacy_backward_of(tape: Any, loss: Any, capture: Any, stage_gradients: list[Any] | None = None) -> LegacyBackward:
    """The per-stage gradients of `loss` from a tape that watched a kept-tensors capture's forward.

    Args:
        stage_gradients: d loss / d (stage outputs, then stage inputs) in `backward_stages` order,
            when the caller already took them (None where unconnected); else taken here.
    """
    from legacy_keras._tf import tf

    names = backward_stages(capture)
    tensors = [capture.tensors_out[name] for name in names] + [capture.tensors_in[name] for name in names]
    if stage_gradients is None:
        stage_gradients = tape.gradient(loss, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = [tf.zeros_like(tensor) if grad is None else grad for tensor, grad in zip(tensors, stage_gradients)]
    result = LegacyBackward(order=names)
    for index, name in enumerate(names):
        result.stage_inputs[name] = np.asarray(capture.tensors_in[name])
        result.upstream[name] = np.asarray(grads[index])
        result.input_gradients[name] = np.asarray(grads[len(names) + index])
    return result


@contextlib.contextmanager
def recorded_arguments(model: Any) -> Iterator[dict[str, tuple[tuple, dict]]]:
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
                        tolerance: float, calls: Mapping[str, tuple[tuple, dict]] | None = None) -> list[Comparison]:
    """Per stage: the port's input gradient, given the legacy's input and upstream gradient, vs the legacy's.

    Compared on real tokens; the relative scale is the legacy's largest input gradient of that stage.

    Args:
        calls: the stages' arguments in a forward of `pt_model` on `inputs` already run
            (`recorded_arguments`); None runs one.
    """
    if calls is None:
        with torch.no_grad(), recorded_arguments(pt_model) as calls:
            pt_model(inputs)
    modules = torch_stage_modules(pt_model)
    results = []
    for name in legacy.order:
        args, kwargs = calls[name]
        device = next(pt_model.parameters()).device
        stage_input = torch.tensor(legacy.stage_inputs[name], dtype=torch.float32, device=device, requires_grad=True)
        output = modules[stage_site(name)](stage_input, *args[1:], **kwargs)
        output = output[0] if isinstance(output, (tuple, list)) else output
        upstream = torch.tensor(np.array(legacy.upstream[name]), dtype=output.dtype, device=device)
        # Only the input's gradient: the parameters' (the LM head's alone is V x H) are not computed.
        (input_gradient,) = torch.autograd.grad(output, stage_input, upstream)
        reference = legacy.input_gradients[name]
        scale = magnitude_scale(reference).value  # the shared rule (parity.agreement)
        comparison = compare_arrays(name, input_gradient.cpu().numpy() / scale, reference / scale, tolerance,
                                    stage_mask(name, inputs))
        results.append(comparison)
    return results
