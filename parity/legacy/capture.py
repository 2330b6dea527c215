"""The legacy's stages captured from its real call (each stage layer's `call` wrapped), and its backward per stage.

See `parity.stages` for why stages are captured rather than re-run; the port's
counterpart is `parity.capture`. The per-stage backward: one eager trainer call
under a `GradientTape`, every stage's input and output tensors kept, then the
total loss's gradient with respect to each of them: the upstream gradient a
stage receives (d loss / d output) and the one it passes on (d loss / d input).
`parity.backward` re-runs each port stage on those and compares.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator, Mapping

import numpy as np

from legacy_keras._tf import tf
from legacy_keras.build import objective_losses
from legacy_keras.gradients import tape_outputs_and_gradients
from parity.legacy.tensors import named_numpy, numpy_outputs, tf_inputs, tf_targets
from parity.noise import max_difference, permutation, permuted, unpermute, values_and_masks
from parity.results import LegacyBackward
from parity.stages import KERAS_ROBERTA, Capture, StageRecorder, first_tensor, num_layers, stage_modules


def keras_stage_layers(model: Any) -> dict[str, Any]:
    """Site -> layer of the legacy Keras `QaracTrainerModel`."""
    return stage_modules(model, KERAS_ROBERTA)


def _keras_numpy(value: Any) -> np.ndarray:
    return np.asarray(first_tensor(value)).copy()


@contextlib.contextmanager
def keras_hooks(model: Any, keep_tensors: bool = False) -> Iterator[Capture]:
    """Record every stage of the legacy model's eager calls inside the block.

    Each stage layer's `call` is wrapped on the instance (Keras' `__call__`
    dispatches to it), and restored afterwards.

    Args:
        keep_tensors: also keep the TF tensors themselves (`capture.tensors_in`,
            `capture.tensors_out`), e.g. to differentiate with respect to them.
    """
    layers = keras_stage_layers(model)
    recorder = StageRecorder(num_layers(model, KERAS_ROBERTA), _keras_numpy)
    originals = {}

    def wrap(site: str, call):
        @functools.wraps(call)
        def recording_call(*args, **kwargs):
            name = recorder.name(site)
            if site.endswith("embeddings"):
                stage_input = None
            else:
                stage_input = args[0] if args else kwargs.get("hidden_states", kwargs.get("inputs"))
            output = call(*args, **kwargs)
            recorder.record(name, stage_input, output)
            if keep_tensors:
                recorder.capture.tensors_in[name] = stage_input
                recorder.capture.tensors_out[name] = first_tensor(output)
            return output
        return recording_call

    for site, layer in layers.items():
        originals[site] = layer.__dict__.get("call")
        layer.call = wrap(site, layer.call)
    try:
        yield recorder.capture
    finally:
        for site, layer in layers.items():
            if originals[site] is None:
                del layer.call
            else:
                layer.call = originals[site]


def capture_keras(model: Any, inputs: Mapping[str, Any]) -> Capture:
    """One eager legacy trainer call (training=False), every stage recorded."""
    with keras_hooks(model) as capture:
        outputs = numpy_outputs(model(tf_inputs(inputs), training=False))
    capture.outputs = outputs
    return capture


def capture_and_gradients(model: Any, inputs: Mapping[str, Any], targets: Mapping[str, Any]):
    """One eager legacy trainer call (training=False) under a tape: its capture (as `capture_keras`) and
    the total loss's gradients (as `parity.legacy.tensors.tf_gradients` in eager mode, keyed by TF name)."""
    target = tf_targets(targets, model.question_encoder.config.hidden_size)
    with keras_hooks(model) as capture:
        outputs, gradients = tape_outputs_and_gradients(model, tf_inputs(inputs), target, False)
    capture.outputs = numpy_outputs(outputs)
    return capture, named_numpy(model.trainable_variables, gradients)


def legacy_floor_variants(tf_model, inputs: Mapping[str, Any], legacy: Capture,
                          seed: int = 0, reorder: bool = True) -> dict[str, dict[str, float]]:
    """The legacy's own noise on one batch (`parity.noise`): value -> {"permuted_batch": max difference}
    ({} for one row, or without `reorder`).

    Args:
        legacy: the legacy's float32 capture of this batch.
    """
    order = permutation(inputs, seed)
    reference, masks = values_and_masks(legacy, inputs)
    if order is None or not reorder:  # one row has no other order; or the padded batch showed none matters
        return {name: {} for name in reference}
    moved, _ = values_and_masks(unpermute(capture_keras(tf_model, permuted(inputs, order)), order), inputs)
    return {name: {"permuted_batch": max_difference(value, reference[name], masks[name])}
            for name, value in moved.items()}


def backward_stages(capture: Any) -> list[str]:
    """The stages of a kept-tensors capture whose input is a float tensor (embeddings take token ids)."""
    return [name for name in capture.order if capture.tensors_in.get(name) is not None]


def legacy_backward(tf_model: Any, inputs: Mapping[str, Any], targets: Mapping[str, Any]) -> LegacyBackward:
    """One eager legacy forward + backward of the total loss, every stage's gradients recorded."""
    batch = tf_inputs(inputs)
    tf_target = tf_targets(targets, tf_model.question_encoder.config.hidden_size)
    with tf.GradientTape() as tape, keras_hooks(tf_model, keep_tensors=True) as capture:
        loss = tf.add_n(list(objective_losses(tf_model(batch, training=False), tf_target).values()))
    return legacy_backward_of(tape, loss, capture)


def legacy_backward_of(tape: Any, loss: Any, capture: Any, stage_gradients: list[Any] | None = None) -> LegacyBackward:
    """The per-stage gradients of `loss` from a tape that watched a kept-tensors capture's forward.

    Args:
        stage_gradients: d loss / d (stage outputs, then stage inputs) in `backward_stages` order,
            when the caller already took them (None where unconnected); else taken here.
    """
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


def legacy_padded_pass(model: Any, inputs: Mapping[str, Any], targets: Mapping[str, Any], reduce: Any = None):
    """Everything the harness takes from the legacy on the padded batch, from one eager forward.

    Under one persistent tape, with every stage's tensors kept: the forward's capture
    (outputs and stages); the gradients of the total loss and of each objective with
    respect to every variable, `reduce` applied to each objective's as soon as it is
    taken (five full gradient sets never sit in memory at once); and the total loss's
    gradients with respect to every stage's output and input (`parity.legacy.capture.legacy_backward`).

    Returns:
        (capture, {None or objective: variable name -> gradient or None}, LegacyBackward).
    """
    batch = tf_inputs(inputs)
    tf_target = tf_targets(targets, model.question_encoder.config.hidden_size)
    with tf.GradientTape(persistent=True) as tape, keras_hooks(model, keep_tensors=True) as capture:
        outputs = model(batch, training=False)
        losses = objective_losses(outputs, tf_target)
        total = tf.add_n(list(losses.values()))
    capture.outputs = numpy_outputs(outputs)
    variables = model.trainable_variables
    stages = backward_stages(capture)
    stage_tensors = [capture.tensors_out[name] for name in stages] + [capture.tensors_in[name] for name in stages]
    # The total's gradients with respect to the variables and the stages, in one backward pass.
    both = tape.gradient(total, variables + stage_tensors)
    gradients = {None: named_numpy(variables, both[:len(variables)])}
    backward = legacy_backward_of(tape, total, capture, both[len(variables):])
    del both
    for objective, loss in losses.items():
        named = named_numpy(variables, tape.gradient(loss, variables))
        gradients[objective] = named if reduce is None else reduce(named)
    del tape
    capture.tensors_in.clear()
    capture.tensors_out.clear()
    return capture, gradients, backward
