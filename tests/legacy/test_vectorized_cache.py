"""The recording's cached `tf.vectorized_map` computes the bits the legacy's fresh eager maps compute.

`parity.legacy.vectorized.cached_vectorized_map` runs each eager map through a function traced once
per input signature instead of a new one per call; the recording (`record_legacy`) runs inside it.
Compared in one process, bit for bit: the trainer's outputs and the total loss's gradients of every
variable, fresh against cached, on two batch shapes (one small enough that a fresh trace captures the
mapped tensors as constants), a second cached call (the cache hit) and after a weight change (the
traced function reads the variables, not values frozen at its trace).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")


def _forward_and_gradients(model, inputs, targets):
    from legacy_keras._tf import tf
    from legacy_keras.build import objective_losses

    with tf.GradientTape() as tape:
        outputs = model(inputs, training=False)
        loss = tf.add_n(list(objective_losses(outputs, targets).values()))
    gradients = tape.gradient(loss, model.trainable_variables)
    arrays = {f"output/{name}": np.asarray(value) for name, value in outputs.items()}
    arrays.update({f"gradient/{variable.name}": None if grad is None else np.asarray(tf.convert_to_tensor(grad))
                   for variable, grad in zip(model.trainable_variables, gradients)})
    return arrays


def _assert_same_bits(fresh, cached):
    assert fresh.keys() == cached.keys()
    for name, value in fresh.items():
        if value is None:
            assert cached[name] is None, name
        else:
            assert cached[name].dtype == value.dtype and np.array_equal(cached[name], value), name


@pytest.mark.parametrize("batch_size, seq_len", [(2, 7), (3, 11)])
def test_cached_maps_compute_the_fresh_maps_bits(legacy_trainer, batch_size, seq_len):
    from legacy_keras.build import synthetic_batch
    from parity.legacy.vectorized import cached_vectorized_map

    inputs, targets = synthetic_batch(legacy_trainer.decoder.config, batch_size=batch_size, seq_len=seq_len, seed=3)
    fresh = _forward_and_gradients(legacy_trainer, inputs, targets)
    with cached_vectorized_map() as cache:
        first = _forward_and_gradients(legacy_trainer, inputs, targets)
        traced = len(cache)
        again = _forward_and_gradients(legacy_trainer, inputs, targets)
    assert traced > 0, "the trainer's forward ran no map through the cache"
    assert len(cache) == traced, "the second forward traced new functions: the cache missed"
    _assert_same_bits(fresh, first)
    _assert_same_bits(fresh, again)


def test_cached_maps_read_the_weights_at_each_call(legacy_trainer):
    from legacy_keras.build import synthetic_batch
    from legacy_keras.layers import GlobalAttentionPoolingHead
    from parity.legacy.vectorized import cached_vectorized_map

    inputs, targets = synthetic_batch(legacy_trainer.decoder.config, batch_size=2, seq_len=7, seed=4)
    heads = [layer for layer in legacy_trainer.submodules if isinstance(layer, GlobalAttentionPoolingHead)]
    assert heads
    saved = [head.local_projection.numpy() for head in heads]
    with cached_vectorized_map():
        _forward_and_gradients(legacy_trainer, inputs, targets)  # traced with the original weights
        try:
            for head, value in zip(heads, saved):
                head.local_projection.assign(value * 3.0 + 0.01)
            cached = _forward_and_gradients(legacy_trainer, inputs, targets)
        finally:
            changed = [head.local_projection.numpy() for head in heads]
            for head, value in zip(heads, saved):
                head.local_projection.assign(value)
    for head, value in zip(heads, changed):
        head.local_projection.assign(value)
    try:
        fresh = _forward_and_gradients(legacy_trainer, inputs, targets)
    finally:
        for head, value in zip(heads, saved):
            head.local_projection.assign(value)
    _assert_same_bits(fresh, cached)
