"""The harness's batches: the max-length batch takes every component to the end of the position table."""

from __future__ import annotations

from parity.stages import sites
from parity.inputs import MAX_LENGTH_INPUTS, SHORT_LENGTH, max_length_batch
from qarac import QaracConfig
from qarac.batch import INPUT_NAMES

ROBERTA_BASE = QaracConfig(base={"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
                                 "num_attention_heads": 12, "intermediate_size": 3072,
                                 "max_position_embeddings": 514})


def test_every_stage_sees_the_longest_length_once():
    inputs = max_length_batch(ROBERTA_BASE)
    lengths = {name: tokens.input_ids.shape[1] for name, tokens in inputs.items()}
    assert ROBERTA_BASE.max_tokens == 512
    for site, calls in sites(12).items():
        assert max(lengths[call] for call in calls) == 512, site


def test_only_one_input_per_component_is_long():
    inputs = max_length_batch(ROBERTA_BASE, seed=3)
    assert set(inputs) == set(INPUT_NAMES)
    for name, tokens in inputs.items():
        expected = 512 if name in MAX_LENGTH_INPUTS else SHORT_LENGTH
        assert tokens.input_ids.shape == (1, expected)
        assert bool(tokens.attention_mask.all())  # no padding
        assert (tokens.input_ids[:, 0] == ROBERTA_BASE.bos_token_id).all()
        assert int(tokens.input_ids.max()) < 50265 and int(tokens.input_ids[:, 1:].min()) >= 5
    assert len(MAX_LENGTH_INPUTS) == 3


def test_the_batch_is_seeded():
    a, b, c = max_length_batch(ROBERTA_BASE, 0), max_length_batch(ROBERTA_BASE, 0), max_length_batch(ROBERTA_BASE, 1)
    assert all((a[name].input_ids == b[name].input_ids).all() for name in a)
    assert any((a[name].input_ids != c[name].input_ids).any() for name in a)


def test_permuted_batch_variant_exists_only_for_several_rows():
    from parity.noise import permutation

    single = max_length_batch(ROBERTA_BASE)
    assert permutation(single, 0) is None  # one row has no other order: the variant is not run
    for rows in (2, 3, 4, 5):
        batch = max_length_batch(ROBERTA_BASE, batch_size=rows)
        for seed in range(6):
            order = permutation(batch, seed)
            assert sorted(order.tolist()) == list(range(rows)) and order.tolist() != list(range(rows))
