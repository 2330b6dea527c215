"""Running the legacy model from the harness: batches converted to TF, outputs to numpy.

Only this module (and `legacy_keras`) touches TensorFlow; the rest of the
harness speaks numpy and torch.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np

from legacy_keras._tf import tf


def tf_tokens(tokens: Any) -> dict[str, Any]:
    """A PyTorch token batch (input_ids, attention_mask) as the legacy's dict of int32 tensors."""
    return {"input_ids": tf.constant(tokens.input_ids.numpy(), dtype=tf.int32),
            "attention_mask": tf.constant(tokens.attention_mask.numpy(), dtype=tf.int32)}


def tf_inputs(inputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: tf_tokens(tokens) for name, tokens in inputs.items()}


def tf_targets(targets: Mapping[str, Any], hidden_size: int) -> dict[str, Any]:
    """The legacy's four targets: token ids for the decoders, zeros for QA, labels (B, 1) for consistency."""
    batch = targets["consistency"].shape[0]
    return {
        "encode_decode": tf.constant(targets["encode_decode"].input_ids.numpy(), dtype=tf.int32),
        "question_answering": tf.zeros((batch, hidden_size), dtype=tf.float32),
        "reasoning": tf.constant(targets["reasoning"].input_ids.numpy(), dtype=tf.int32),
        "consistency": tf.constant(targets["consistency"].numpy()[:, None], dtype=tf.float32),
    }


def numpy_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: numpy_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [numpy_tree(item) for item in value]
    return np.asarray(value)


def disable_tf32() -> bool:
    """Turn TF32 matmuls off and read the setting back."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
    return not tf.config.experimental.tensor_float_32_execution_enabled()


def _objective_losses(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Any]:
    from legacy_keras.build import legacy_losses

    return {name: loss(targets[name], outputs[name]) for name, loss in legacy_losses().items()}


def _named_numpy(variables: list[Any], gradients: list[Any]) -> dict[str, np.ndarray | None]:
    """Gradients keyed by variable name; IndexedSlices densified, None kept (no gradient)."""
    return {variable.name: None if grad is None else np.asarray(tf.convert_to_tensor(grad))
            for variable, grad in zip(variables, gradients)}


def _tape_step(model: Any, batch: Any, targets: Any, objective: str | None):
    with tf.GradientTape() as tape:
        losses = _objective_losses(model(batch, training=False), targets)
        loss = tf.add_n(list(losses.values())) if objective is None else losses[objective]
    return tape.gradient(loss, model.trainable_variables)


@contextlib.contextmanager
def graph_optimizer_off() -> Iterator[None]:
    """Grappler off for the functions first called inside the block (it optimises a graph on its first call)."""
    before = bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def tf_gradients(model: Any, inputs: Mapping[str, Any], targets: Mapping[str, Any], mode: str = "eager",
                 objective: str | None = None, optimize_graph: bool = True) -> dict[str, np.ndarray | None]:
    """Gradients of the legacy trainer's total loss (or one objective's), keyed by TF variable name.

    Args:
        mode: "eager" (a GradientTape run eagerly) or "graph" (the same step in `tf.function`).
        objective: one of the four outputs, or None for the plain sum `fit` minimises.
        optimize_graph: graph mode: let Grappler optimise the step's graph. Which variables get
            no gradient is decided while tracing, before Grappler runs; off, the step's first
            call on roberta-base shapes takes 8 s instead of 19 s.

    Dropout is off (`training=False`) so the gradients can be compared with PyTorch's.
    """
    if mode not in ("eager", "graph"):
        raise ValueError(f"mode must be 'eager' or 'graph', got {mode!r}")
    batch = tf_inputs(inputs)
    tf_target = tf_targets(targets, model.question_encoder.config.hidden_size)
    step = _tape_step if mode == "eager" else tf.function(_tape_step)
    with contextlib.nullcontext() if optimize_graph or mode == "eager" else graph_optimizer_off():
        return _named_numpy(model.trainable_variables, step(model, batch, tf_target, objective))


def legacy_padded_pass(model: Any, inputs: Mapping[str, Any], targets: Mapping[str, Any], reduce: Any = None):
    """Everything the harness takes from the legacy on the padded batch, from one eager forward.

    Under one persistent tape, with every stage's tensors kept: the forward's capture
    (outputs and stages); the gradients of the total loss and of each objective with
    respect to every variable, `reduce` applied to each objective's as soon as it is
    taken (five full gradient sets never sit in memory at once); and the total loss's
    gradients with respect to every stage's output and input (`parity.backward.legacy_backward`).

    Returns:
        (capture, {None or objective: variable name -> gradient or None}, LegacyBackward).
    """
    from parity.backward import backward_stages, legacy_backward_of
    from parity.capture import keras_hooks

    batch = tf_inputs(inputs)
    tf_target = tf_targets(targets, model.question_encoder.config.hidden_size)
    with tf.GradientTape(persistent=True) as tape, keras_hooks(model, keep_tensors=True) as capture:
        outputs = model(batch, training=False)
        losses = _objective_losses(outputs, tf_target)
        total = tf.add_n(list(losses.values()))
    capture.outputs = numpy_tree(outputs)
    capture.outputs["consistency"] = capture.outputs["consistency"][:, 0]  # (B, 1) -> (B,) as the port
    variables = model.trainable_variables
    stages = backward_stages(capture)
    stage_tensors = [capture.tensors_out[name] for name in stages] + [capture.tensors_in[name] for name in stages]
    # The total's gradients with respect to the variables and the stages, in one backward pass.
    both = tape.gradient(total, variables + stage_tensors)
    gradients = {None: _named_numpy(variables, both[:len(variables)])}
    backward = legacy_backward_of(tape, total, capture, both[len(variables):])
    del both
    for objective, loss in losses.items():
        named = _named_numpy(variables, tape.gradient(loss, variables))
        gradients[objective] = named if reduce is None else reduce(named)
    del tape
    capture.tensors_in.clear()
    capture.tensors_out.clear()
    return capture, gradients, backward


# --- the legacy in float64 ---------------------------------------------------------------------

FLOAT64_GELU_CONSTANT = 0.7071067811865476  # 1/sqrt(2) in float64
# The two parts of the legacy that do not run in float64 when built with floatx float64. Both cast a
# Python float with `tf.cast(value, dtype)`, which converts it to a float32 tensor first, so the
# constant is rounded to float32 (measured: 1.2e-8 relative) whatever the dtype:
# - GELU: `tf.nn.gelu` (transformers' TF "gelu" is tf_keras' gelu, which calls it) multiplies by
#   `cast(0.7071067811865476)`: 5e-9 absolute on GELU's output, 2e-9 relative on the logits;
# - attention: `TFRobertaSelfAttention` divides the scores by `cast(sqrt(head size))`, inexact in
#   float32 unless the head size is a perfect square (8 on the tiny model: 1e-8 relative on the
#   sharpened weights' layer outputs; 64 on roberta-base: exact).
# In the float64 run each is replaced by the same formula with the float64 constant (`float64_gelu`;
# the layer's `sqrt_att_head_size` held as a numpy float64, which converts without rounding), and the
# bundle declares the substitutes.
FLOAT64_SUBSTITUTES = {
    "gelu": "tf.nn.gelu rounds its constant 1/sqrt(2) to float32 whatever the dtype; the float64 run uses "
            "0.5 * x * erfc(-x * 0.7071067811865476) with the constant in float64",
    "attention scale": "TFRobertaSelfAttention casts sqrt(head size), a Python float, through float32; the "
                       "float64 run holds it as a numpy float64 (the same value, not rounded)",
}


def float64_gelu(x: Any) -> Any:
    """Exact GELU, every constant in `x`'s dtype: 0.5 x erfc(-x / sqrt(2))."""
    x = tf.convert_to_tensor(x)
    return 0.5 * x * tf.math.erfc(-x * tf.constant(FLOAT64_GELU_CONSTANT, dtype=x.dtype))


@contextlib.contextmanager
def float64_build() -> Iterator[None]:
    """Keras layers built inside the block hold float64 variables and compute in float64; transformers'
    TF layers built inside take `float64_gelu` for "gelu" (see `FLOAT64_SUBSTITUTES`)."""
    import tf_keras
    from transformers import activations_tf

    floatx, gelu = tf_keras.backend.floatx(), activations_tf.ACT2FN["gelu"]
    tf_keras.backend.set_floatx("float64")
    activations_tf.ACT2FN["gelu"] = float64_gelu
    try:
        yield
    finally:
        tf_keras.backend.set_floatx(floatx)
        activations_tf.ACT2FN["gelu"] = gelu


def legacy_float64(model_dir: Any, seed: int, pt_legacy: Any, weight_map: Any) -> Any:
    """The legacy trainer built in float64 holding exactly the weights of `pt_legacy` (float32 values).

    Built after every float32 use of the legacy: building clears Keras' session (variable names as in
    the seed's warning, so `weight_map` applies to it as to the float32 trainer).
    """
    from legacy_keras.build import build_trainer
    from parity import bridge

    from transformers.models.roberta.modeling_tf_roberta import TFRobertaSelfAttention

    with float64_build():
        model = build_trainer(model_dir, seed=seed, compile=False)
    attention = [layer for layer in model.submodules if isinstance(layer, TFRobertaSelfAttention)]
    if not attention:
        raise RuntimeError("found no TFRobertaSelfAttention layer in the float64 legacy trainer")
    for layer in attention:
        layer.sqrt_att_head_size = np.float64(layer.sqrt_att_head_size)
    if any(variable.dtype != tf.float64 for variable in model.trainable_variables):
        raise RuntimeError("the float64 legacy trainer holds variables of another dtype")
    bridge.copy_pt_to_tf(pt_legacy, model, weight_map)  # float32 values, exactly representable in float64
    return model
