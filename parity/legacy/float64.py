"""The legacy built and run in float64: the same weights (float32 values) and batches, every
compared value and the eager gradients (`parity.exactness` compares the port's float64 twin with it)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from legacy_keras._tf import tf
from legacy_keras.build import build_trainer
from parity import bridge
from parity.legacy.capture import capture_and_gradients, capture_keras
from parity.sharp import sharpened
from parity.memory import release_memory
from parity.results import CASES, LegacyFloat64

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
    from transformers.models.roberta.modeling_tf_roberta import TFRobertaSelfAttention

    with float64_build():  # every weight is written below: the checkpoint is not converted again
        model = build_trainer(model_dir, seed=seed, compile=False, load_weights=False)
    attention = [layer for layer in model.submodules if isinstance(layer, TFRobertaSelfAttention)]
    if not attention:
        raise RuntimeError("found no TFRobertaSelfAttention layer in the float64 legacy trainer")
    for layer in attention:
        layer.sqrt_att_head_size = np.float64(layer.sqrt_att_head_size)
    if any(variable.dtype != tf.float64 for variable in model.trainable_variables):
        raise RuntimeError("the float64 legacy trainer holds variables of another dtype")
    # Built from the config, the bases hold initial values: a variable the map does not write would
    # keep one and move the float64 run silently.
    written = {entry.tf_name for entry in weight_map.entries}
    unwritten = sorted(variable.name for variable in model.weights if variable.name not in written)
    if unwritten:
        raise RuntimeError(f"the float64 legacy trainer's variables {unwritten} are not written by the weight map")
    bridge.copy_pt_to_tf(pt_legacy, model, weight_map)  # float32 values, exactly representable in float64
    return model


def record_float64(model_dir: Path, seed: int, pt_legacy: Any, weight_map: Any,
                   inputs: Mapping[str, Any], targets: Mapping[str, Any], sharpened_set: int) -> LegacyFloat64:
    """The legacy built in float64 with `pt_legacy`'s weights: every case's forward (the sharpened case
    on the weight set of version `sharpened_set`, `parity.sharp`) and the padded batch's eager gradients
    of the total loss (`legacy_float64`)."""
    release_memory()
    model = legacy_float64(model_dir, seed, pt_legacy, weight_map)
    # The padded batch's capture and gradients from one forward (a taped forward computes what an untaped one does).
    padded, grads = capture_and_gradients(model, inputs["padded"], targets)
    captures = {"padded": padded, **{case: capture_keras(model, inputs[case]) for case in CASES if case != "padded"}}
    with sharpened(pt_legacy, model, weight_map, sharpened_set):
        captures["sharp"] = capture_keras(model, inputs["padded"])
    del model
    release_memory()
    return LegacyFloat64(captures, weight_map.as_pt(grads), dict(FLOAT64_SUBSTITUTES))
