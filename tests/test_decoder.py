"""Decoder: padding invariance, causality of the head, tying, generation."""

import pytest
import torch

from model_helpers import append_padding, random_tokens, tiny_config
from qarac import QaracDecoderModel


def make_decoder(config, seed=0):
    torch.manual_seed(seed)
    return QaracDecoderModel(config).eval()


def logits_of(decoder, vector, tokens):
    with torch.no_grad():
        return decoder(vector, tokens.input_ids, tokens.attention_mask)


def test_decoder_shapes_and_tying(config):
    decoder = make_decoder(config)
    tokens = random_tokens(13, 7)
    assert logits_of(decoder, torch.randn(13, 32), tokens).shape == (13, 7, config.vocab_size)
    lm_weight = decoder.decoder_head.head.decoder.weight
    assert lm_weight is decoder.decoder.embeddings.word_embeddings.weight
    assert lm_weight.data_ptr() == decoder.decoder.embeddings.word_embeddings.weight.data_ptr()


def padding_shift(config):
    """Max |logit change| at real positions when 4 padding tokens are appended."""
    decoder = make_decoder(config)
    vector = torch.randn(3, 32)
    tokens = random_tokens(3, 6, [6, 4, 2])
    before = logits_of(decoder, vector, tokens)
    after = logits_of(decoder, vector, append_padding(tokens, 4))[:, :6]
    return (before - after).abs()[tokens.attention_mask.bool()].max()


def test_default_decoder_ignores_appended_padding(config):
    assert padding_shift(config) <= 1e-6


def test_legacy_decoder_moves_with_appended_padding(legacy_config):
    shift = padding_shift(legacy_config)
    print(f"legacy decoder: max |logit change| at real positions from 4 padding tokens = {float(shift):.4g}")
    assert shift > 1e-3


@pytest.mark.parametrize("causal", [True, False], ids=["default", "legacy-head"])
def test_later_token_changes_earlier_logits_only_in_legacy(causal):
    decoder = make_decoder(tiny_config(causal_decoder_head=causal))
    vector = torch.randn(2, 32)
    tokens = random_tokens(2, 8)
    changed = random_tokens(2, 8)
    t = 4
    changed.input_ids[:, : t + 1] = tokens.input_ids[:, : t + 1]
    changed.input_ids[:, t + 1] = (tokens.input_ids[:, t + 1] + 7) % 90 + 5  # a different token at t+1
    difference = (logits_of(decoder, vector, tokens) - logits_of(decoder, vector, changed))[:, : t + 1].abs().max()
    if causal:
        assert difference <= 1e-6
    else:
        assert difference > 1e-3


def test_vector_reaches_the_logits(config):
    decoder = make_decoder(config)
    tokens = random_tokens(1, 5)
    difference = (logits_of(decoder, torch.randn(1, 32), tokens) - logits_of(decoder, torch.randn(1, 32), tokens)).abs()
    assert difference[0, 0].max() > 1e-4  # even the first position depends on the vector


def test_generate_greedy_matches_stepwise_argmax(config):
    decoder = make_decoder(config)
    vector = torch.randn(2, 32)
    generated = decoder.generate(vector, max_length=6)
    assert generated.shape[1] <= 6 and bool((generated[:, 0] == config.bos_token_id).all())
    for row in range(2):
        sequence = generated[row : row + 1, :1]
        for step in range(1, generated.shape[1]):
            if sequence[0, -1] == config.eos_token_id:
                assert bool((generated[row, step:] == config.pad_token_id).all())
                break
            with torch.no_grad():
                next_token = decoder(vector[row : row + 1], sequence).argmax(-1)[:, -1:]
            assert int(next_token) == int(generated[row, step])
            sequence = torch.cat([sequence, next_token], dim=1)


def test_generate_stops_at_end_of_sequence(config):
    decoder = make_decoder(config)
    with torch.no_grad():  # make </s> the argmax everywhere through the output bias
        decoder.decoder_head.head.bias[config.eos_token_id] = 1e4
    generated = decoder.generate(torch.randn(3, 32), max_length=10)
    assert generated.tolist() == [[config.bos_token_id, config.eos_token_id]] * 3
