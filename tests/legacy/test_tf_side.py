"""The harness's TensorFlow runs: the graph step with Grappler off loses exactly what the optimised one loses."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")
pytestmark = pytest.mark.legacy

from legacy_helpers import SEED_MISSING  # noqa: E402


def test_graph_optimizer_off_is_restored():
    from parity.legacy.tensors import graph_optimizer_off

    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    with graph_optimizer_off():
        assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"] is True
    assert tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False) == before


@pytest.mark.slow
def test_graph_step_without_grappler_matches_the_optimised_one(tiny_model_dir):
    from legacy_keras.build import build_trainer
    from parity.inputs import sample_batch
    from parity.legacy.tensors import tf_gradients
    from qarac import QaracConfig
    from qarac.checkpoint import read_roberta_config

    trainer = build_trainer(tiny_model_dir, seed=0)
    config = QaracConfig.from_roberta_config(read_roberta_config(tiny_model_dir)).legacy()
    batch = sample_batch(tiny_model_dir, config, 4, 0)
    plain = tf_gradients(trainer, batch.inputs, batch.targets, "graph", optimize_graph=False)
    optimised = tf_gradients(trainer, batch.inputs, batch.targets, "graph")
    assert sorted(name for name, grad in plain.items() if grad is None) == sorted(SEED_MISSING)
    assert plain.keys() == optimised.keys()
    # Grappler rewrites arithmetic, so values move by float32 noise: relative to each gradient's
    # scale, and for the analytically zero key biases (~1e-11 of noise) to the model's largest.
    largest = max(float(np.abs(grad).max()) for grad in optimised.values() if grad is not None)
    for name, grad in plain.items():
        if grad is not None:
            scale = max(float(np.abs(optimised[name]).max()), 1e-6 * largest)
            assert float(np.abs(grad - optimised[name]).max()) <= 1e-5 * scale, name
