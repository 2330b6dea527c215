"""Which gradients the legacy loses, in which execution mode, and why.

One minimal test per cause (see legacy_keras/README.md), then the full trainer
per mode. Cause 1: dead pooler. Cause 2: GradientTape + `tf.vectorized_map`
over a `@tf.function` that reads a variable, under graph execution.
"""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")
pytestmark = pytest.mark.legacy

from legacy_helpers import LOCAL_PROJECTIONS, POOLERS, SEED_MISSING  # noqa: E402

from legacy_keras.gradients import gradient_report, missing_gradients  # noqa: E402
from legacy_keras.layers import GlobalAttentionPoolingHead  # noqa: E402


def _norm(gradient):
    return None if gradient is None else float(tf.norm(gradient))


# --- cause 2, minimal: no Keras, no RoBERTa ----------------------------------
def _vmap_over_tf_function_case():
    variable = tf.Variable(tf.random.stateless_normal((4, 4), seed=(0, 1)))
    x = tf.random.stateless_normal((2, 3, 4), seed=(0, 2))

    @tf.function
    def project(rows):  # (T, H) -> (T, H), reads the captured variable
        return tf.tensordot(rows, variable, axes=1)

    def loss():
        return tf.reduce_sum(tf.vectorized_map(project, x) ** 2)

    return variable, loss


def test_vmap_over_tf_function_gradient_exists_eagerly():
    variable, loss = _vmap_over_tf_function_case()
    with tf.GradientTape() as tape:
        value = loss()
    assert _norm(tape.gradient(value, variable)) > 0


def test_vmap_over_tf_function_gradient_is_none_under_tf_function():
    variable, loss = _vmap_over_tf_function_case()

    @tf.function
    def tape_gradient():
        with tf.GradientTape() as tape:
            value = loss()
        return tape.gradient(value, variable)

    assert tape_gradient() is None


def test_graph_is_connected_only_the_tape_loses_the_link():
    """Symbolic tf.gradients on the very same graph finds the gradient: the ops
    are connected; it is GradientTape's bookkeeping that misses the variable."""
    variable, loss = _vmap_over_tf_function_case()

    @tf.function
    def symbolic_gradient():
        return tf.gradients(loss(), [variable])[0]

    with tf.GradientTape() as tape:
        value = loss()
    np.testing.assert_allclose(symbolic_gradient().numpy(), tape.gradient(value, variable).numpy(), rtol=1e-5)


def test_reading_the_variable_under_the_tape_first_restores_the_link():
    """The variable's first capture into the outer graph happens inside pfor's
    loop body, through the nested call; read it once under the tape beforehand
    and the tape records the capture, so the gradient reappears."""
    variable, loss = _vmap_over_tf_function_case()

    @tf.function
    def tape_gradient():
        with tf.GradientTape() as tape:
            tf.identity(variable)
            value = loss()
        return tape.gradient(value, variable)

    assert _norm(tape_gradient()) > 0


def test_vmap_over_plain_function_keeps_gradient_under_tf_function():
    variable = tf.Variable(tf.random.stateless_normal((4, 4), seed=(0, 1)))
    x = tf.random.stateless_normal((2, 3, 4), seed=(0, 2))

    @tf.function
    def tape_gradient():
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(tf.vectorized_map(lambda rows: tf.tensordot(rows, variable, axes=1), x) ** 2)
        return tape.gradient(value, variable)

    assert _norm(tape_gradient()) > 0


# --- cause 2 in the pooling head, and its fix --------------------------------
@pytest.mark.parametrize("fix", [False, True])
def test_pooling_head_local_projection_gradient(fix):
    head = GlobalAttentionPoolingHead(fix_local_projection_gradient=fix)
    x = tf.random.stateless_normal((2, 5, 8), seed=(5, 6))
    head(x)

    def gradients():
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(head(x) ** 2)
        return tape.gradient(value, [head.global_projection, head.local_projection])

    eager_g, eager_l = gradients()
    graph_g, graph_l = tf.function(gradients)()
    assert _norm(eager_g) > 0 and _norm(eager_l) > 0  # eager: both exist
    assert _norm(graph_g) > 0  # the global projection never loses its gradient
    if fix:
        np.testing.assert_allclose(graph_l.numpy(), eager_l.numpy(), rtol=1e-4, atol=1e-6)
    else:
        assert graph_l is None  # graph execution: the local projection's is lost


def test_fix_does_not_change_the_output():
    x = tf.random.stateless_normal((2, 5, 8), seed=(7, 8))
    legacy, fixed = GlobalAttentionPoolingHead(), GlobalAttentionPoolingHead(fix_local_projection_gradient=True)
    legacy(x), fixed(x)
    fixed.set_weights(legacy.get_weights())
    np.testing.assert_allclose(fixed(x).numpy(), legacy(x).numpy(), rtol=1e-6)


# --- cause 1, minimal: the pooler is dead -------------------------------------
def test_pooler_gets_no_gradient_from_last_hidden_state(legacy_trainer):
    base = legacy_trainer.question_encoder.encoder
    tokens = tf.constant([[0, 17, 42, 2]])
    with tf.GradientTape() as tape:
        outputs = base(tokens, training=False)
        value = tf.reduce_sum(outputs.last_hidden_state ** 2)
    assert outputs.pooler_output is not None  # computed in the forward pass...
    pooler = base.roberta.pooler.dense
    assert tape.gradient(value, [pooler.kernel, pooler.bias]) == [None, None]  # ...but unused


# --- the trainer, per mode ---------------------------------------------------
def test_eager_loses_only_the_poolers(legacy_trainer, legacy_batch):
    report = gradient_report(legacy_trainer, *legacy_batch, mode="eager")
    assert list(report.missing) == POOLERS
    assert report.zero == ()  # no gradient is merely zero


@pytest.mark.slow
def test_graph_loses_poolers_and_local_projections(legacy_trainer, legacy_batch):
    assert missing_gradients(legacy_trainer, *legacy_batch, mode="graph") == SEED_MISSING


def test_fit_run_eagerly_loses_only_the_poolers(legacy_trainer, legacy_batch):
    before = [v.numpy().copy() for v in legacy_trainer.trainable_variables[:3]]
    assert missing_gradients(legacy_trainer, *legacy_batch, mode="fit_eager") == POOLERS
    after = [v.numpy() for v in legacy_trainer.trainable_variables[:3]]
    for old, new in zip(before, after):  # the probe restores the weights
        np.testing.assert_array_equal(old, new)


@pytest.mark.slow
def test_fixed_trainer_loses_only_the_poolers_under_graph():
    from legacy_keras.build import build_trainer, synthetic_batch

    trainer = build_trainer(seed=0, fix_local_projection_gradient=True, compile=False)
    batch = synthetic_batch(trainer.decoder.config, batch_size=2, seq_len=7, seed=1)
    report = gradient_report(trainer, *batch, mode="graph")
    assert list(report.missing) == POOLERS
    assert not set(LOCAL_PROJECTIONS) & set(report.missing)


def test_unknown_mode_rejected(legacy_trainer, legacy_batch):
    with pytest.raises(ValueError, match=r"unknown mode 'jit'"):
        missing_gradients(legacy_trainer, *legacy_batch, mode="jit")


def test_the_fit_warning_is_caught_after_tensorflows_logger_was_silenced():
    """`qarac-parity` silences TensorFlow's logger (level ERROR, `parity.logs.silence_library_logs`);
    a `fit` probe in the same process must still read the warning, and leave the silence as it was."""
    import logging

    from legacy_keras.gradients import capture_missing_gradient_warnings

    logger = logging.getLogger("tensorflow")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with capture_missing_gradient_warnings() as warnings:
            logger.warning("Gradients do not exist for variables %s when minimizing the loss.", ["a/kernel:0", "b:0"])
        assert warnings == [["a/kernel:0", "b:0"]]
        assert logger.level == logging.ERROR
        logger.warning("Gradients do not exist for variables %s when minimizing the loss.", ["after:0"])
        assert warnings == [["a/kernel:0", "b:0"]]
    finally:
        logger.setLevel(before)
