"""Running the legacy model from the harness: batches converted to TF, outputs to numpy.

Only this module (and `legacy_keras`) touches TensorFlow; the rest of the
harness speaks numpy and torch.
"""

from __future__ import annotations

from typing import Any, Mapping

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
