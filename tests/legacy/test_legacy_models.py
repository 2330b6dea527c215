"""Forward shapes and the legacy quirks of docs/legacy.md, on the embedded tiny RoBERTa."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")
pytestmark = pytest.mark.legacy

from legacy_keras.layers import GlobalAttentionPoolingHead  # noqa: E402

B, T, H, V = 2, 7, 32, 512  # tiny model: hidden 32, vocab 512


def ids(rows):
    return tf.constant(np.asarray(rows, dtype=np.int32))


# --- forward shapes ----------------------------------------------------------
def test_trainer_outputs_shapes(legacy_trainer, legacy_batch):
    inputs, _ = legacy_batch
    outputs = legacy_trainer(inputs, training=False)
    assert list(outputs) == ["encode_decode", "question_answering", "reasoning", "consistency"]
    assert outputs["encode_decode"].shape == (B, T, V)
    assert outputs["question_answering"].shape == (B, H)
    assert outputs["reasoning"].shape == (B, T, V)
    assert outputs["consistency"].shape == (B, 1)
    consistency = outputs["consistency"].numpy()
    assert np.all(np.abs(consistency) <= 1 + 1e-5)


def test_encoder_and_decoder_shapes(legacy_trainer, legacy_batch):
    inputs, _ = legacy_batch
    vector = legacy_trainer.answer_encoder(inputs["all_text"])
    assert vector.shape == (B, H)
    logits = legacy_trainer.decoder((vector, inputs["offset_text"]))
    assert logits.shape == (B, T, V)
    by_keyword = legacy_trainer.decoder(inputs["offset_text"], vector=vector)
    np.testing.assert_allclose(by_keyword.numpy(), logits.numpy(), atol=1e-6)


def test_decoder_head_shape(legacy_trainer):
    head = legacy_trainer.decoder.decoder_head
    out = head((tf.zeros((3, H)), tf.random.normal((3, 5, H))))
    assert out.shape == (3, 5, V)


def test_consistency_is_cosine_of_answer_encodings(legacy_trainer, legacy_batch):
    inputs, _ = legacy_batch
    s0 = legacy_trainer.answer_encoder(inputs["statement0"]).numpy()
    s1 = legacy_trainer.answer_encoder(inputs["statement1"]).numpy()
    expected = np.sum(s0 * s1, axis=1) / (np.linalg.norm(s0, axis=1) * np.linalg.norm(s1, axis=1))
    got = legacy_trainer(inputs, training=False)["consistency"].numpy()[:, 0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --- the pooling head against numpy ------------------------------------------
def test_pooling_head_matches_numpy_formula():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 5, 6)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=np.float32)
    head = GlobalAttentionPoolingHead()
    head(tf.constant(X))
    G, L = head.global_projection.numpy(), head.local_projection.numpy()

    def unit(x, axis):
        return x / np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), 1e-12))

    g = unit(X.sum(axis=1) @ G, 1)  # (B, H): padding included, as the legacy
    attention = np.einsum("bth,bh->bt", unit(X @ L, 2), g)
    for m in (np.ones_like(mask), mask):
        expected = np.einsum("bt,bth->bh", attention * m, X)
        got = head(tf.constant(X), attention_mask=tf.constant(m)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_pooling_head_weights_named_as_legacy():
    head = GlobalAttentionPoolingHead(name="global_attention_pooling_head_test")
    head(tf.zeros((1, 2, 8)))
    names = [w.name.split("/")[-1] for w in head.weights]
    assert names == ["global projection:0", "local projection:0"]
    assert [tuple(w.shape) for w in head.weights] == [(8, 8), (8, 8)]
    rebuilt = GlobalAttentionPoolingHead.from_config(
        GlobalAttentionPoolingHead(fix_local_projection_gradient=True).get_config()
    )
    assert rebuilt.fix_local_projection_gradient is True


# --- quirks ------------------------------------------------------------------
def test_padding_changes_encoder_output(legacy_trainer):
    """Quirk: the head gets no mask, so padding leaks into the vector."""
    encoder = legacy_trainer.answer_encoder
    short = {"input_ids": ids([[0, 17, 42, 2]]), "attention_mask": ids([[1, 1, 1, 1]])}
    padded = {"input_ids": ids([[0, 17, 42, 2, 1, 1]]), "attention_mask": ids([[1, 1, 1, 1, 0, 0]])}
    base_short = encoder.encoder(short).last_hidden_state.numpy()
    base_padded = encoder.encoder(padded).last_hidden_state.numpy()[:, :4]
    np.testing.assert_allclose(base_padded, base_short, atol=1e-5)  # the base model uses the mask...
    difference = np.abs(encoder(padded).numpy() - encoder(short).numpy()).max()
    assert difference > 1e-3  # ...the head does not


def test_later_token_changes_earlier_decoder_logits(legacy_trainer):
    """Quirk: the decoder head's layers are bidirectional although the base is causal."""
    decoder = legacy_trainer.decoder
    vector = tf.random.stateless_normal((1, H), seed=(1, 2))
    a = ids([[0, 17, 42, 99]])
    b = ids([[0, 17, 42, 300]])  # only the last token differs
    base_a = decoder.decoder(a).last_hidden_state.numpy()
    base_b = decoder.decoder(b).last_hidden_state.numpy()
    np.testing.assert_allclose(base_a[:, :3], base_b[:, :3], atol=1e-5)  # causal base
    logits_a = decoder((vector, a)).numpy()
    logits_b = decoder((vector, b)).numpy()
    assert np.abs(logits_a[:, 0] - logits_b[:, 0]).max() > 1e-4  # position 0 sees position 3


def test_lm_head_is_tied_to_decoder_input_embeddings(legacy_trainer):
    decoder = legacy_trainer.decoder
    embedding = decoder.decoder.roberta.embeddings.weight
    assert decoder.decoder_head.head.decoder.weight is embedding
    assert embedding.name.startswith("tf_roberta_model_1/")
    trainable_ids = [id(v) for v in legacy_trainer.trainable_variables]
    assert trainable_ids.count(id(embedding)) == 1  # one matrix, not an input and an output copy
    head_variables = [v.name for v in decoder.decoder_head.trainable_variables]
    assert not any(name.endswith("word_embeddings/weight:0") and "head" in name for name in head_variables)


def test_encoders_share_one_base_and_own_their_heads(legacy_trainer):
    q, a = legacy_trainer.question_encoder, legacy_trainer.answer_encoder
    assert q.encoder is a.encoder
    assert {id(v) for v in q.encoder.weights} == {id(v) for v in a.encoder.weights}
    assert q.head is not a.head
    assert q.head.local_projection is not a.head.local_projection
    assert legacy_trainer.decoder.decoder is not q.encoder
    assert legacy_trainer.decoder.decoder.config.is_decoder and not q.encoder.config.is_decoder


def test_variable_names_as_in_the_original(legacy_trainer):
    from legacy_helpers import SEED_MISSING

    names = [v.name for v in legacy_trainer.trainable_variables]
    for name in SEED_MISSING:  # pooler present, heads named as the seed's warning
        assert name in names
    assert "qarac_trainer_model/qarac_encoder_model/global_attention_pooling_head/global projection:0" in names
    assert any(n.startswith("qarac_trainer_model/qarac_decoder_model/qarac_decoder_head/layer_0/") for n in names)
    assert any(n.startswith("qarac_trainer_model/qarac_decoder_model/qarac_decoder_head/layer_1/") for n in names)


def test_generate_greedy(legacy_trainer):
    decoder = legacy_trainer.decoder
    vector = tf.random.stateless_normal((2, H), seed=(3, 4))
    out = decoder.generate(vector, max_new_tokens=4)
    assert out.shape[0] == 2 and 2 <= out.shape[1] <= 5
    assert (out[:, 0] == decoder.config.bos_token_id).all()
    assert ((out >= 0) & (out < V)).all()
    # greedy: the first generated token is the argmax of the one-token logits
    first = decoder((vector, tf.constant(out[:, :1]))).numpy()[:, -1].argmax(-1)
    np.testing.assert_array_equal(out[:, 1], first)
    np.testing.assert_array_equal(decoder.generate(vector, max_new_tokens=4), out)  # deterministic
