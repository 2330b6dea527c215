"""The data options of `qarac.data.options.DataConfig`: each one alone, the legacy preset, CorpusBatches.

Expected values are computed here from the tokenizer and the texts, not read
back from CorpusBatches. The legacy preset against the legacy pipeline itself is
in tests/legacy/test_legacy_pipeline.py.
"""

import numpy as np
import pytest
import torch

from qarac.data.batches import CorpusBatches, RaggedBatchError
from qarac.data.corpora import Corpora, compose_all_text
from qarac.data.options import LEGACY_DATA_VALUES, DataConfig, data_config_for

# all_text length 4 * 6 = 24 composed; odd batch size so no batch boundary hides a bug.
SMALL_BATCH = 5


@pytest.fixture(scope="module")
def small_corpora():
    """Sizes 7, 4, 3, 5; conclusions of different token lengths."""
    return Corpora(
        all_text=[f"Sentence number {i} is here." for i in range(7)],
        question_answering=[(f"Who is person {i}?", f"Person {i} is Emma.") for i in range(4)],
        reasoning=[(f"All cats are grey {i}.", "Tom is a cat.", "Tom is grey" + " and old" * i + ".")
                   for i in range(3)],
        consistency=[(f"Ben runs {i}.", f"Ben moves {i}.", (1, 0, -1, 1, 0)[i]) for i in range(5)],
    )


def _batches(corpora, tokenizer, **options):
    return CorpusBatches(corpora, tokenizer, DataConfig(**options), batch_size=SMALL_BATCH, seed=1)


def _rows(tokens):
    """A TokenBatch's rows without padding (by mask), as lists."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(tokens.input_ids, tokens.attention_mask)]


# --- the config -----------------------------------------------------------------------
def test_default_and_legacy_values():
    assert DataConfig().is_default
    legacy = DataConfig().legacy()
    assert {name: getattr(legacy, name) for name in LEGACY_DATA_VALUES} == dict(LEGACY_DATA_VALUES)
    assert all(getattr(DataConfig(), name) != value for name, value in LEGACY_DATA_VALUES.items())
    assert data_config_for("legacy") == legacy and data_config_for("default") == DataConfig()


@pytest.mark.parametrize("bad, message", [
    ({"padding": "row"}, r"padding must be one of \['batch', 'corpus', 'corpus_fit'\], got 'row'"),
    ({"batching": "x"}, r"batching must be one of"),
    ({"batch_size": 0}, r"batch_size must be at least 1"),
])
def test_bad_options_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**bad)


def test_assignments_override_a_preset():
    config = data_config_for("legacy", ["padding=corpus_fit", "batch_size=8", "truncate=true"])
    assert (config.padding, config.batch_size, config.truncate) == ("corpus_fit", 8, True)
    assert config.decoder_affixes == "post_processor"
    with pytest.raises(ValueError, match=r"NAME=VALUE with NAME one of"):
        DataConfig().with_assignments(["colour=red"])
    with pytest.raises(ValueError, match=r"true or false"):
        DataConfig().with_assignments(["truncate=maybe"])
    with pytest.raises(ValueError, match=r"preset must be 'default' or 'legacy'"):
        data_config_for("original")


# --- each option -------------------------------------------------------------------------
@pytest.mark.parametrize("special", [True, False])
def test_encoder_special_tokens(small_corpora, tokenizer, special):
    data = _batches(small_corpora, tokenizer, encoder_special_tokens=special)
    batch = next(data.batches())
    rows = data.plan(0)[0]
    for row, ids in zip(rows["question_answering"], _rows(batch.inputs["question"])):
        body = tokenizer(small_corpora.question_answering[row][0], add_special_tokens=False)["input_ids"]
        assert ids == ([0] + body + [2] if special else body)


@pytest.mark.parametrize("affixes, prefix, suffix", [("single", [0], [2]),
                                                     ("post_processor", [0, 0, 2], [0, 2, 2])])
def test_decoder_affixes(small_corpora, tokenizer, affixes, prefix, suffix):
    data = _batches(small_corpora, tokenizer, decoder_affixes=affixes)
    batch = next(data.batches())
    rows = data.plan(0)[0]["all_text"]
    offsets, targets = _rows(batch.inputs["offset_text"]), _rows(batch.targets["encode_decode"])
    shift = len(prefix)
    for row, offset, target in zip(rows, offsets, targets):
        body = tokenizer(small_corpora.all_text[row], add_special_tokens=False)["input_ids"]
        assert offset == prefix + body and target == body + suffix
        assert offset[shift:] == target[:-shift]  # position i is trained on the token `shift` ahead


def test_corpus_padding_lengths_as_the_original(small_corpora, tokenizer):
    data = _batches(small_corpora, tokenizer, padding="corpus", decoder_affixes="post_processor",
                    encoder_special_tokens=False, truncate=False)
    conclusions = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for *_, c in small_corpora.reasoning]
    statements = [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s, *_ in small_corpora.consistency]
    assert data.lengths["conclusion_offset"] == data.lengths["reasoning"] == max(conclusions) + 1
    assert data.lengths["statement0"] == max(statements)
    for index, rows in enumerate(data.plan(0)):
        long_rows = [r for r in rows["reasoning"] if conclusions[r] >= max(conclusions) - 1]
        if long_rows and len(long_rows) < len(rows["reasoning"]):
            with pytest.raises(RaggedBatchError, match=rf"batch {index}, field 'conclusion_offset'"):
                data.build(rows, index)
        elif not long_rows:
            batch = data.build(rows, index)
            assert batch.inputs["statement0"].input_ids.shape[1] == max(statements)
            ids = batch.inputs["conclusion_offset"].input_ids
            assert ids.shape[1] == max(conclusions) + 1
            assert torch.equal(batch.inputs["conclusion_offset"].attention_mask, (ids != 1).long())


def test_corpus_fit_padding_has_fixed_shapes_and_no_ragged_batch(small_corpora, tokenizer):
    data = _batches(small_corpora, tokenizer, padding="corpus_fit", decoder_affixes="post_processor")
    assert data.find_ragged(0) == []
    shapes = {tuple(batch.inputs["conclusion_offset"].input_ids.shape) for batch in data.batches()}
    longest = max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for *_, c in small_corpora.reasoning)
    assert {shape[1] for shape in shapes} == {longest + 3}


def test_all_text_epoch_batching(small_corpora, tokenizer):
    data = _batches(small_corpora, tokenizer, batching="all_text_epoch", all_text="composed")
    assert data.sizes["all_text"] == 4 + 3 + 3 + 3 + 5 + 5  # answers, premises twice, conclusions, statements
    plan = data.plan(0)
    assert len(plan) == len(data) == 23 // SMALL_BATCH  # the last partial batch is dropped
    drawn = [row for batch in plan for row in batch["all_text"]]
    assert len(set(drawn)) == len(drawn) == 20  # each all_text row at most once
    consistency = [row for batch in plan for row in batch["consistency"]]
    for start in range(0, 20, 5):  # repeated pass after pass, each a permutation
        assert sorted(consistency[start:start + 5]) == list(range(5))
    assert data.plan(1) != plan and data.plan(1) == data.plan(1)  # a new, reproducible order


def test_composed_all_text_order(small_corpora):
    texts = compose_all_text(small_corpora)
    answers = [a for _, a in small_corpora.question_answering]
    premises = [p for p, _, _ in small_corpora.reasoning]
    assert texts[:4] == answers and texts[4:7] == premises and texts[7:10] == premises
    assert texts[-5:] == [s for _, s, _ in small_corpora.consistency]


def test_no_truncation_refuses_a_long_text_up_front(small_corpora, tokenizer):
    long = Corpora(["word " * 40], *[getattr(small_corpora, n) for n in ("question_answering", "reasoning",
                                                                        "consistency")])
    with pytest.raises(ValueError, match=r"field 'all_text', row 0: \d+ tokens, more than max_length 16"):
        CorpusBatches(long, tokenizer, DataConfig(truncate=False), max_length=16)
    truncated = CorpusBatches(long, tokenizer, DataConfig(), max_length=16)
    assert max(np.diff(truncated.columns["all_text"].offsets)) == 16


def test_consistency_labels_are_floats(small_corpora, tokenizer):
    data = _batches(small_corpora, tokenizer)
    batch = next(data.batches())
    assert batch.targets["consistency"].dtype == torch.float32
    expected = [float(small_corpora.consistency[r][2]) for r in data.plan(0)[0]["consistency"]]
    assert batch.targets["consistency"].tolist() == expected


def test_legacy_preset_on_the_sample_corpora(corpora, tokenizer):
    data = CorpusBatches(corpora, tokenizer, DataConfig().legacy(), seed=0)
    assert data.batch_size == 32 and len(data) == 1440 // 32
    ragged = data.find_ragged(0)
    assert ragged and ragged[0].batch == 0  # the original's first batch is already ragged (seed 0)
    fitted = CorpusBatches(corpora, tokenizer, DataConfig().legacy().with_assignments(["padding=corpus_fit"]))
    assert fitted.find_ragged(0) == []


def test_find_ragged_agrees_with_build(corpora, tokenizer):
    """The lengths-only check names exactly the batches `build` refuses, with the same field."""
    data = CorpusBatches(corpora, tokenizer, DataConfig().legacy(), seed=2)
    found = {r.batch: r for r in data.find_ragged(1)}
    for index, rows in enumerate(data.plan(1)):
        if index in found:
            with pytest.raises(RaggedBatchError) as error:
                data.build(rows, index)
            assert error.value.ragged == found[index]
        else:
            data.build(rows, index)
    assert 0 < len(found) < len(data)
