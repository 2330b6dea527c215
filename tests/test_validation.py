"""Bad input gets an error that names the problem."""

import pytest
import torch

from model_helpers import random_tokens, tiny_config
from qarac import QaracDecoderModel, QaracEncoderModel


@pytest.fixture(scope="module")
def encoder():
    return QaracEncoderModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def decoder():
    return QaracDecoderModel(tiny_config()).eval()


def test_ids_outside_vocabulary(encoder):
    tokens = random_tokens(2, 5)
    tokens.input_ids[1, 3] = 99
    with pytest.raises(ValueError, match=r"id 99 at \(batch, token\) \(1, 3\), outside the vocabulary of 99"):
        encoder(tokens.input_ids, tokens.attention_mask)


def test_negative_ids(encoder):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encoder(torch.tensor([[0, -1, 2]]))


def test_sequence_longer_than_positions(encoder):
    with pytest.raises(ValueError, match="129 tokens but the position table allows at most 128"):
        encoder(torch.zeros(1, 129, dtype=torch.long))


def test_max_length_sequence_is_accepted(encoder):
    with torch.no_grad():
        assert encoder(torch.full((1, 128), 7, dtype=torch.long)).shape == (1, 32)


def test_mask_shape_mismatch(encoder):
    tokens = random_tokens(2, 5)
    with pytest.raises(ValueError, match=r"attention_mask .* shape \(2, 4\) but the ids have shape \(2, 5\)"):
        encoder(tokens.input_ids, tokens.attention_mask[:, :4])


def test_empty_batch(encoder):
    with pytest.raises(ValueError, match="empty"):
        encoder(torch.zeros(0, 5, dtype=torch.long))


def test_non_integer_ids(encoder):
    with pytest.raises(TypeError, match="integer token ids.*float32"):
        encoder(torch.zeros(2, 5))


def test_wrong_rank(encoder):
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\), got shape \(5,\)"):
        encoder(torch.zeros(5, dtype=torch.long))


def test_vector_seed_batch_mismatch(decoder):
    tokens = random_tokens(3, 5)
    with pytest.raises(ValueError, match="batch size 2 but the seed tokens have batch size 3"):
        decoder(torch.randn(2, 32), tokens.input_ids, tokens.attention_mask)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_vector(decoder, bad):
    vector = torch.randn(2, 32)
    vector[1, 4] = bad
    with pytest.raises(ValueError, match=r"non-finite value .* at \(1, 4\)"):
        decoder.generate(vector)


def test_vector_wrong_width(decoder):
    with pytest.raises(ValueError, match=r"shape \(batch, 32\), got \(2, 31\)"):
        decoder.generate(torch.randn(2, 31))


def test_generate_max_length_bounds(decoder):
    with pytest.raises(ValueError, match="max_length"):
        decoder.generate(torch.randn(1, 32), max_length=500)


def test_skip_value_checks_skips_only_the_value_checks():
    from qarac.validation import check_token_ids, check_vectors, skip_value_checks, value_checks_enabled

    config = tiny_config()
    out_of_vocabulary = torch.full((1, 3), config.vocab_size)
    with skip_value_checks():
        assert not value_checks_enabled()
        check_token_ids(out_of_vocabulary, None, config)  # would raise outside the block
        check_vectors(torch.full((1, config.hidden_size), float("nan")), config)
        with pytest.raises(ValueError, match="shape"):
            check_token_ids(torch.zeros(3, dtype=torch.long), None, config)  # shape checks still run
    assert value_checks_enabled()
    with pytest.raises(ValueError, match="vocabulary"):
        check_token_ids(out_of_vocabulary, None, config)


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0])
def test_mask_values_other_than_0_and_1_rejected(encoder, decoder, value):
    """Issue 13 item 9: a 0.5 or 2 in the mask was accepted and changed the output."""
    tokens = random_tokens(2, 5)
    mask = tokens.attention_mask.float()
    mask[1, 2] = value
    with pytest.raises(ValueError, match=r"attention_mask for input_ids holds .* at \(batch, token\) \(1, 2\); "
                                         r"expected 0 \(padding\) or 1"):
        encoder(tokens.input_ids, mask)
    with pytest.raises(ValueError, match="expected 0 .padding. or 1"):
        decoder(torch.zeros(2, 32), tokens.input_ids, mask.long() if value == 2.0 else mask)


def test_float_and_bool_masks_of_zeros_and_ones_accepted(encoder):
    tokens = random_tokens(2, 5, lengths=[5, 3])
    with torch.no_grad():
        reference = encoder(tokens.input_ids, tokens.attention_mask)
        for mask in (tokens.attention_mask.float(), tokens.attention_mask.bool()):
            torch.testing.assert_close(encoder(tokens.input_ids, mask), reference)
