"""Encoder: padding invariance (default) and the legacy padding leak."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_helpers import append_padding, random_tokens, tiny_config
from qarac import QaracEncoderModel


def make_encoder(config, seed=0):
    torch.manual_seed(seed)
    return QaracEncoderModel(config).eval()


def test_encoder_output_shape(config):
    tokens = random_tokens(13, 7, [7, 3] * 6 + [1])
    assert make_encoder(config)(tokens.input_ids, tokens.attention_mask).shape == (13, 32)


def padding_shift(config):
    """Per row, max |change| of the encoder vector when 5 padding tokens are appended."""
    encoder = make_encoder(config)
    tokens = random_tokens(4, 6, [6, 4, 2, 1])
    padded = append_padding(tokens, 5)
    with torch.no_grad():
        before = encoder(tokens.input_ids, tokens.attention_mask)
        after = encoder(padded.input_ids, padded.attention_mask)
    return (before - after).abs().max(dim=1).values


def test_default_encoder_ignores_appended_padding(config):
    assert padding_shift(config).max() <= 1e-6


def test_legacy_encoder_moves_with_appended_padding(legacy_config):
    shift = padding_shift(legacy_config)
    print(f"legacy encoder: max |change| per row from 5 extra padding tokens = {shift.tolist()}")
    # Padding enters the head's global sum and its weighted sum: every row moves, by far more than float noise.
    assert bool((shift > 1e-3).all())


def test_legacy_and_default_agree_without_padding(config):
    tokens = random_tokens(3, 7)
    with torch.no_grad():
        fixed = make_encoder(config)(tokens.input_ids, tokens.attention_mask)
        legacy = make_encoder(config.replace(pooling_masks_padding=False))(tokens.input_ids, tokens.attention_mask)
    torch.testing.assert_close(fixed, legacy, rtol=1e-5, atol=1e-6)


def test_question_and_answer_encoders_share_the_base():
    from qarac import QaracTrainerModel

    trainer = QaracTrainerModel(tiny_config())
    assert trainer.question_encoder.encoder is trainer.answer_encoder.encoder
    assert trainer.question_encoder.head is not trainer.answer_encoder.head
    q = dict(trainer.question_encoder.named_parameters())
    a = dict(trainer.answer_encoder.named_parameters())
    assert q["encoder.embeddings.word_embeddings.weight"].data_ptr() == a["encoder.embeddings.word_embeddings.weight"].data_ptr()
    assert q["head.local_projection"].data_ptr() != a["head.local_projection"].data_ptr()


_ENCODER = None


def shared_encoder():
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = make_encoder(tiny_config(), seed=3)
    return _ENCODER


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 10), st.integers(1, 6), st.data())
def test_encoder_property_padding_never_matters(batch, length, extra, data):
    lengths = data.draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))
    tokens = random_tokens(batch, length, lengths, seed=data.draw(st.integers(0, 999)))
    encoder = shared_encoder()
    with torch.no_grad():
        batched = encoder(tokens.input_ids, tokens.attention_mask)
        padded = append_padding(tokens, extra)
        more_padding = encoder(padded.input_ids, padded.attention_mask)
        # Each row alone, without any padding, gives the same vector as inside the padded batch.
        alone = torch.cat([encoder(tokens.input_ids[i:i + 1, :n]) for i, n in enumerate(lengths)])
    assert (batched - more_padding).abs().max() <= 1e-5
    assert (batched - alone).abs().max() <= 1e-5


def test_all_padding_row(config, legacy_config):
    """Default: a row with no real token pools to the zero vector (every weight masked);
    legacy: the head sees the padding states and returns a finite, non-zero vector."""
    tokens = random_tokens(2, 5, [5, 1])
    tokens.input_ids[1] = 1
    tokens.attention_mask[1] = 0
    with torch.no_grad():
        fixed = make_encoder(config)(tokens.input_ids, tokens.attention_mask)
        legacy = make_encoder(legacy_config)(tokens.input_ids, tokens.attention_mask)
    assert torch.equal(fixed[1], torch.zeros(32)) and fixed[0].abs().sum() > 0
    assert bool(torch.isfinite(legacy).all()) and legacy[1].abs().sum() > 0
