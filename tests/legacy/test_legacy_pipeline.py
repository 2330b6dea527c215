"""The original's input pipeline (legacy_keras.pipeline, docs/legacy.md §1.5), the port's legacy data
preset against it, the head's three vectorized_maps, and what `fit` does over an epoch."""

import csv

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")
pytestmark = pytest.mark.legacy

from legacy_keras.pipeline import (BATCH_SIZE, CombinedCorpus, RaggedBatchError,  # noqa: E402
                                   compose_all_text, find_ragged_batches, legacy_tokenizer, read_corpora)
from qarac.data.batches import CorpusBatches  # noqa: E402
from qarac.data.batches import RaggedBatchError as PortRaggedBatchError  # noqa: E402
from qarac.data.corpora import DEFAULT_DATA_DIR  # noqa: E402
from qarac.data.options import DataConfig  # noqa: E402

WIDTH = 32  # the tiny model's hidden size, standing in for the original's 768


@pytest.fixture(scope="module")
def tokenizer():
    return legacy_tokenizer()


def _corpus(tokenizer, seed=0, directory=DEFAULT_DATA_DIR, **kwargs):
    return CombinedCorpus.from_directory(directory, tokenizer, seed=seed, qa_target_width=WIDTH, **kwargs)


def _first_good_batch(corpus):
    for index, samples in enumerate(corpus.raw_batches()):
        if corpus.find_ragged(index, samples) is None:
            return samples, corpus.batch(samples, index)
    raise AssertionError("no rectangular batch in the epoch")


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_affixes_are_three_tokens(tokenizer):
    corpus = _corpus(tokenizer)
    assert corpus.all_text.start_doc == [0, 0, 2]  # encode('<s>') through the post-processor
    assert corpus.all_text.end_doc == [0, 2, 2]


def test_batch_contents_as_the_original(tokenizer):
    corpus = _corpus(tokenizer, seed=3)
    samples, (x, y) = _first_good_batch(corpus)
    assert set(x) == {"all_text", "offset_text", "question", "answer", "proposition0", "proposition1",
                      "conclusion_offset", "statement0", "statement1"}
    assert list(y) == ["encode_decode", "question_answering", "reasoning", "consistency"]
    assert x["question"]["input_ids"].shape == (BATCH_SIZE, corpus.max_lengths["question"])
    text = samples[0][0]["all_text"]
    row = x["all_text"]["input_ids"][0].numpy()
    assert row[0] != 0 and list(row[: len(text)]) == text  # no <s>: encoded without special tokens
    offset = x["offset_text"]["input_ids"][0].numpy()[: len(text) + 3]
    target = y["encode_decode"][0].numpy()[: len(text) + 3]
    assert list(offset) == [0, 0, 2, *text] and list(target) == [*text, 0, 2, 2]
    mask = x["offset_text"]["attention_mask"].numpy()
    np.testing.assert_array_equal(mask, (x["offset_text"]["input_ids"].numpy() != 1).astype(np.int32))
    assert y["consistency"].dtype == tf.float32 and y["consistency"].shape == (BATCH_SIZE,)
    assert set(y["consistency"].numpy()) <= {-1.0, 0.0, 1.0}
    assert y["question_answering"].shape == (BATCH_SIZE, WIDTH) and not np.any(y["question_answering"].numpy())


def test_padded_lengths_computed_as_the_original(tokenizer):
    corpora = read_corpora(DEFAULT_DATA_DIR)
    corpus = _corpus(tokenizer)
    longest = {column: max(len(_ids(tokenizer, t)) for t in texts)
               for name in corpora for column, texts in corpora[name].items() if column != "consistency"}
    assert corpus.max_lengths["question"] == longest["question"]
    assert corpus.max_lengths["offset_text"] == corpus.max_lengths["encode_decode"] == longest["all_text"] + 1
    assert corpus.max_lengths["conclusion_offset"] == longest["conclusion"] + 1


def test_epoch_set_by_all_text_others_repeated(tokenizer):
    corpus = _corpus(tokenizer)
    n_all_text = len(corpus.all_text)
    assert n_all_text == 6 * 240 and len(corpus) == n_all_text // 32  # composed: 240 rows x 6 columns
    batches = list(corpus.raw_batches())
    assert len(batches) == len(corpus) and all(len(b) == 32 for b in batches)
    answers = [tuple(sample[0]["answer"]) for batch in batches for sample in batch]
    distinct = len(set(tuple(_ids(tokenizer, a)) for a in read_corpora(DEFAULT_DATA_DIR)
                       ["question_answering"]["answer"]))
    assert len(set(answers[:240])) == distinct  # each pass of a repeated corpus is a permutation


def test_all_text_composed_from_the_other_corpora():
    corpora = read_corpora(DEFAULT_DATA_DIR, compose=False)
    texts = compose_all_text(DEFAULT_DATA_DIR)
    premises = corpora["reasoning"]["proposition0"]
    assert texts[:240] == corpora["question_answering"]["answer"]
    assert texts[240:480] == premises and texts[480:720] == premises  # Premise 1 twice
    assert texts[720:960] == corpora["reasoning"]["conclusion"]
    assert "proposition1" not in corpora["reasoning"] or not set(corpora["reasoning"]["proposition1"]) <= set(texts)


def test_csv_written_by_pandas_with_index_and_float_labels(tmp_path, tokenizer):
    """The original's CSVs came from pandas' to_csv: an unnamed index column and 1.0 / -1.0 labels."""
    source = read_corpora(DEFAULT_DATA_DIR, compose=False)
    for name, columns in source.items():
        with (tmp_path / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", *columns])
            for i, row in enumerate(zip(*columns.values())):
                writer.writerow([i, *(f"{float(v):.1f}" if c == "consistency" else v
                                      for c, v in zip(columns, row))])
    a, b = _corpus(tokenizer, directory=tmp_path, compose=False), _corpus(tokenizer, compose=False)
    assert a.max_lengths == b.max_lengths and len(a) == len(b)


def test_ragged_batch_raises_as_the_original(tokenizer):
    corpus = _corpus(tokenizer)
    ragged = find_ragged_batches(_corpus(tokenizer))
    assert ragged, "docs/legacy.md §1.5: texts within two tokens of the longest make ragged batches"
    first = ragged[0]
    longest = first.longest_text
    assert first.padded_length == longest + 1 and max(first.row_lengths) in (longest + 2, longest + 3)
    with pytest.raises(RaggedBatchError, match=rf"batch {first.batch}, field '{first.field}'"):
        for _ in corpus:
            pass


@pytest.mark.parametrize("seed", [0, 3])
def test_port_legacy_preset_builds_identical_batches(tokenizer, seed):
    """Two epochs: same ids, masks and targets, and the same ragged batches refused."""
    from qarac.tokenizer import load_default_tokenizer

    legacy = _corpus(tokenizer, seed=seed)
    port = CorpusBatches.from_directory(DEFAULT_DATA_DIR, load_default_tokenizer(), DataConfig().legacy(),
                                       seed=seed)
    compared = 0
    for epoch in range(2):
        raw = list(legacy.raw_batches())
        plan = port.plan(epoch)
        assert len(raw) == len(plan)
        for index, (samples, rows) in enumerate(zip(raw, plan)):
            try:
                x, y = legacy.batch(samples, index)
            except RaggedBatchError as error:
                with pytest.raises(PortRaggedBatchError) as port_error:
                    port.build(rows, index)
                got = port_error.value.ragged
                assert (got.field, got.row_lengths, got.padded_length) == (
                    error.ragged.field, error.ragged.row_lengths, error.ragged.padded_length)
                continue
            batch = port.build(rows, index)
            for name, tokens in x.items():
                np.testing.assert_array_equal(batch.inputs[name].input_ids.numpy(), tokens["input_ids"].numpy())
                np.testing.assert_array_equal(batch.inputs[name].attention_mask.numpy(),
                                              tokens["attention_mask"].numpy())
            for name in ("encode_decode", "reasoning"):
                np.testing.assert_array_equal(batch.targets[name].input_ids.numpy(), y[name].numpy())
            np.testing.assert_array_equal(batch.targets["consistency"].numpy(), y["consistency"].numpy())
            compared += 1
    assert compared >= 10


def test_pooling_head_uses_three_vectorized_maps(monkeypatch):
    """docs/legacy.md §1.1: the local projection, the attention dot products and the weighted sum.
    The output is checked against numpy from the formula."""
    from legacy_keras import layers

    calls = []
    original = tf.vectorized_map

    def counting(fn, elems, **kwargs):
        calls.append(getattr(fn, "__name__", getattr(fn, "_name", repr(fn))))
        return original(fn, elems, **kwargs)

    monkeypatch.setattr(layers.tf, "vectorized_map", counting)
    head = layers.GlobalAttentionPoolingHead()
    x = tf.random.stateless_normal((3, 5, 4), seed=(1, 2))
    out = head(x).numpy()
    assert len(calls) == 3 and calls[1:] == ["dot_prod", "dot_prod"]
    X = x.numpy().astype(np.float64)
    G, L = (w.numpy().astype(np.float64) for w in (head.global_projection, head.local_projection))
    g = X.sum(axis=1) @ G
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    local = X @ L
    local /= np.linalg.norm(local, axis=2, keepdims=True)
    attention = np.einsum("bth,bh->bt", local, g)
    np.testing.assert_allclose(out, np.einsum("bt,bth->bh", attention, X), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fit_over_an_epoch_stops_at_the_first_ragged_batch(legacy_trainer):
    from legacy_keras.reproduce import fit_epoch

    saved = legacy_trainer.get_weights()
    try:
        report = fit_epoch(legacy_trainer, seed=2)  # seed 2: batch 0 is rectangular, batch 1 not
    finally:
        legacy_trainer.set_weights(saved)
    first = report["first_ragged"]
    assert report["stopped"] and first is not None
    assert report["batches_completed"] == first["batch"] > 0  # fit trained every batch before it
    assert "RaggedBatchError" in report["error"] or "non-rectangular" in report["error"] or \
        first["field"] in report["error"]
    assert report["ragged_batches_in_epoch"] > 1 and report["batches_in_epoch"] == 45


@pytest.mark.slow
def test_fit_runs_the_whole_epoch_when_no_batch_is_ragged(legacy_trainer, tmp_path, tokenizer):
    """Every decoder text of one token length: rows all n + 3, none padded, nothing ragged."""
    from legacy_keras.reproduce import fit_epoch

    # 16 rows per corpus: three batches of 32 (each one a fit step), enough to tell a whole epoch
    # from a stop after the first batch.
    rows = 16
    source = read_corpora(DEFAULT_DATA_DIR)
    same_length = {name: {column: texts[:rows] for column, texts in columns.items()}
                   for name, columns in source.items()}
    same_length["reasoning"]["conclusion"] = ["Tom is grey."] * rows
    same_length["question_answering"]["answer"] = ["Tom is grey."] * rows
    same_length["reasoning"]["proposition0"] = ["Tom is grey."] * rows
    same_length["consistency"]["statement0"] = ["Tom is grey."] * rows
    same_length["consistency"]["statement1"] = ["Tom is grey."] * rows
    for name, columns in same_length.items():
        if name == "all_text":
            continue
        with (tmp_path / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(columns))
            writer.writerows(zip(*columns.values()))
    saved = legacy_trainer.get_weights()
    try:
        report = fit_epoch(legacy_trainer, data_dir=tmp_path)
    finally:
        legacy_trainer.set_weights(saved)
    assert report["ragged_batches_in_epoch"] == 0 and report["first_ragged"] is None
    assert not report["stopped"] and report["batches_completed"] == report["batches_in_epoch"] == rows * 6 // 32 == 3
