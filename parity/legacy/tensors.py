"""Running the legacy model from the harness: batches converted to TF, outputs to numpy, gradients by tape."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np

from legacy_keras._tf import tf
from legacy_keras.gradients import tape_gradients


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


def numpy_outputs(outputs: Any) -> dict[str, np.ndarray]:
    """The trainer's outputs as numpy, consistency (B, 1) -> (B,) as the port returns it."""
    result = numpy_tree(outputs)
    result["consistency"] = result["consistency"][:, 0]
    return result


def disable_tf32() -> bool:
    """Turn TF32 matmuls off and read the setting back."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
    return not tf.config.experimental.tensor_float_32_execution_enabled()


def named_numpy(variables: list[Any], gradients: list[Any]) -> dict[str, np.ndarray | None]:
    """Gradients keyed by variable name; IndexedSlices densified, None kept (no gradient)."""
    return {variable.name: None if grad is None else np.asarray(tf.convert_to_tensor(grad))
            for variable, grad in zip(variables, gradients)}


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
                 optimize_graph: bool = True) -> dict[str, np.ndarray | None]:
    """Gradients of the legacy trainer's total loss (the plain sum `fit` minimises), keyed by TF variable name.

    Args:
        mode: "eager" (a GradientTape run eagerly) or "graph" (the same step in `tf.function`).
        optimize_graph: graph mode: let Grappler optimise the step's graph. Which variables get
            no gradient is decided while tracing, before Grappler runs; off, the step's first
            call on roberta-base shapes takes 8 s instead of 19 s.

    Dropout is off (`training=False`) so the gradients can be compared with PyTorch's.
    """
    if mode not in ("eager", "graph"):
        raise ValueError(f"mode must be 'eager' or 'graph', got {mode!r}")
    batch = tf_inputs(inputs)
    tf_target = tf_targets(targets, model.question_encoder.config.hidden_size)
    step = tape_gradients if mode == "eager" else tf.function(tape_gradients)
    with contextlib.nullcontext() if optimize_graph or mode == "eager" else graph_optimizer_off():
        return named_numpy(model.trainable_variables, step(model, batch, tf_target, False))

