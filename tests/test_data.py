"""Corpora, tokenisation, the cycled examples, padding, and the order and loader of the batching pipeline."""

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qarac.batch import INPUT_NAMES, TARGET_NAMES, QaracBatch, TokenBatch, pad_sequences
from qarac.data.batches import CorpusBatches
from qarac.data.corpora import (DEFAULT_DATA_DIR, Corpora, DataError, load_all_text, load_consistency,
                                load_question_answering, load_reasoning)
from qarac.data.tokens import FIELD_CORPUS, encode

ROOT = Path(__file__).resolve().parent.parent
TOKEN_FIELDS = INPUT_NAMES + ("encode_decode", "reasoning")


@pytest.fixture(scope="module")
def small_corpora():
    """Deliberately odd sizes 7, 3, 2, 5 so that every corpus but one is cycled."""
    return Corpora(
        all_text=[f"Sentence number {i} is here." for i in range(7)],
        question_answering=[(f"Who is person {i}?", f"Person {i} is Emma.") for i in range(3)],
        reasoning=[(f"All cats are grey {i}.", "Tom is a cat.", f"Tom is grey {i}.")
                   for i in range(2)],
        consistency=[(f"Ben runs {i}.", f"Ben moves {i}.", (1, 0, -1, 1, 0)[i]) for i in range(5)],
    )


# --- sample corpora ---------------------------------------------------------------

def test_sample_corpora_are_big_enough(corpora):
    assert all(size >= 220 for size in corpora.sizes().values()), corpora.sizes()
    assert {label for *_, label in corpora.consistency} == {1, 0, -1}


def test_all_text_is_the_union_of_the_other_corpora(corpora):
    others = {s for row in corpora.question_answering for s in row}
    others |= {s for row in corpora.reasoning for s in row}
    others |= {s for row in corpora.consistency for s in row[:2]}
    assert set(corpora.all_text) == others
    assert len(corpora.all_text) == len(set(corpora.all_text))


def test_sample_data_script_rewrites_identical_files(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample_data",
                                                  ROOT / "scripts" / "make_sample_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([str(tmp_path)])
    for name in ("all_text", "question_answering", "reasoning", "consistency"):
        shipped = (DEFAULT_DATA_DIR / f"{name}.csv").read_bytes()
        assert (tmp_path / f"{name}.csv").read_bytes() == shipped, name


# --- CSV loading ------------------------------------------------------------------

def write(tmp_path, text: str | bytes, name: str = "corpus.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_loaders_read_quotes_extra_columns_and_bom(tmp_path):
    # Quoted commas and quotes are read; a field spanning lines is refused (tests/test_corpus_reading.py).
    path = write(tmp_path, '\ufeffid,question,answer\n7,"Where, exactly?","Here, ""and"" there."\n')
    assert load_question_answering(path) == [("Where, exactly?", 'Here, "and" there.')]
    path = write(tmp_path, "statement0,statement1,consistency\na,b,1\nc,d,-1\ne,f,0.0\n")
    assert load_consistency(path) == [("a", "b", 1), ("c", "d", -1), ("e", "f", 0)]
    path = write(tmp_path, "proposition0,proposition1,conclusion\np,q,r\n")
    assert load_reasoning(path) == [("p", "q", "r")]


BAD_INPUTS = [
    pytest.param(load_all_text, b"", r"corpus\.csv: the file is empty", id="empty file"),
    pytest.param(load_all_text, b"\n  \n", r"corpus\.csv: the file is empty", id="blank file"),
    pytest.param(load_all_text, b"all_text\n", r"corpus\.csv: .*no data rows", id="header only"),
    pytest.param(load_question_answering, b"question,reply\na,b\n",
                 r"corpus\.csv, line 1: missing column.*'answer'", id="missing column"),
    pytest.param(load_consistency, b"statement0,statement1,consistency\na,b,1\nc,d,2\n",
                 r"corpus\.csv, line 3: bad consistency label '2'", id="bad label"),
    pytest.param(load_consistency, b"statement0,statement1,consistency\na,b,yes\n",
                 r"corpus\.csv, line 2: bad consistency label 'yes'", id="word label"),
    pytest.param(load_all_text, b"all_text\nfine\nna\xefve\n",
                 r"corpus\.csv, line 3: undecodable bytes", id="not utf-8"),
    pytest.param(load_reasoning, b"proposition0,proposition1,conclusion\na,b,c\nd, ,f\n",
                 r"corpus\.csv, line 3: empty cell in column 'proposition1'", id="empty cell"),
    pytest.param(load_reasoning, b"proposition0,proposition1,conclusion\na,b\n",
                 r"corpus\.csv, line 2: 2 fields, but the header has 3", id="short row"),
]


@pytest.mark.parametrize("loader, contents, message", BAD_INPUTS)
def test_bad_input_names_file_and_line(tmp_path, loader, contents, message):
    with pytest.raises(DataError, match=message):
        loader(write(tmp_path, contents))


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such corpus file"):
        load_all_text(tmp_path / "absent.csv")


# --- tokenisation ------------------------------------------------------------------

def test_full_encoding_is_s_text_end(tokenizer, corpora):
    texts = corpora.all_text[:40]
    for text, ids in zip(texts, encode(tokenizer, texts, 128, special=True, truncate=True)):
        assert ids == [0] + tokenizer.encode(text, add_special_tokens=False) + [2]


def one_text_corpora(small_corpora, text: str) -> Corpora:
    return Corpora([text], small_corpora.question_answering, small_corpora.reasoning, small_corpora.consistency)


def test_offset_and_target_are_shifted_by_one(tokenizer, corpora):
    data = CorpusBatches(corpora, tokenizer)
    for row in range(40):
        body = tokenizer.encode(corpora.all_text[row], add_special_tokens=False)
        offset, target = data.columns["offset_text"][row].tolist(), data.columns["encode_decode"][row].tolist()
        assert offset == [0] + body
        assert target == body + [2]
        assert offset[1:] == target[:-1]


def test_truncation_keeps_the_special_tokens(tokenizer, small_corpora):
    text = "All the members of the chess club are teachers who like tea."
    body = tokenizer.encode(text, add_special_tokens=False)
    assert len(body) > 6
    data = CorpusBatches(one_text_corpora(small_corpora, text), tokenizer, max_length=6)
    assert data.columns["all_text"][0].tolist() == [0] + body[:4] + [2]
    assert data.columns["offset_text"][0].tolist() == [0] + body[:5]
    assert data.columns["encode_decode"][0].tolist() == body[:5] + [2]


def test_max_length_below_three_is_refused(tokenizer, small_corpora):
    with pytest.raises(ValueError, match="at least 3"):
        CorpusBatches(small_corpora, tokenizer, max_length=2)


# --- cycled examples ------------------------------------------------------------------

def test_an_epoch_is_the_largest_corpus(tokenizer, corpora, small_corpora):
    assert CorpusBatches(small_corpora, tokenizer).example_count == 7
    data = CorpusBatches(corpora, tokenizer, batch_size=16)
    assert data.example_count == max(corpora.sizes().values())
    assert len(data) == -(-data.example_count // 16)  # the last partial batch is kept


def test_smaller_corpora_are_cycled(tokenizer, small_corpora):
    batch = CorpusBatches(small_corpora, tokenizer).examples(range(7))
    questions = [tokenizer.encode(q) for q, _ in small_corpora.question_answering]
    used = [questions.index(ids) for ids in rows_of(batch.inputs["question"])]
    assert used == [0, 1, 2, 0, 1, 2, 0]
    assert batch.targets["consistency"].tolist() == [1, 0, -1, 1, 0, 1, 0]
    conclusions = rows_of(batch.targets["reasoning"])
    assert conclusions[0::2] == [conclusions[0]] * 4 and conclusions[1::2] == [conclusions[1]] * 3
    assert conclusions[0] != conclusions[1]


def rows_of(tokens: TokenBatch) -> list[list[int]]:
    """A TokenBatch's rows without padding (by mask), as lists."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(tokens.input_ids, tokens.attention_mask)]


def test_example_fields_match_their_corpus_rows(tokenizer, corpora):
    data = CorpusBatches(corpora, tokenizer)
    indices = [0, 239, 240, 1000, data.example_count - 1]
    batch = data.examples(indices)
    fields = {name: rows_of(tokens) for name, tokens in {**batch.inputs, **batch.targets}.items()
              if isinstance(tokens, TokenBatch)}
    for n, index in enumerate(indices):
        question, answer = corpora.question_answering[index % 240]
        p0, p1, conclusion = corpora.reasoning[index % 240]
        s0, s1, label = corpora.consistency[index % 240]
        body = tokenizer.encode(conclusion, add_special_tokens=False)
        assert fields["all_text"][n] == tokenizer.encode(corpora.all_text[index])
        assert fields["question"][n] == tokenizer.encode(question)
        assert fields["answer"][n] == tokenizer.encode(answer)
        assert fields["proposition0"][n] == tokenizer.encode(p0)
        assert fields["proposition1"][n] == tokenizer.encode(p1)
        assert fields["statement0"][n] == tokenizer.encode(s0)
        assert fields["statement1"][n] == tokenizer.encode(s1)
        assert fields["conclusion_offset"][n] == [0] + body
        assert fields["reasoning"][n] == body + [2]
        assert batch.targets["consistency"][n].item() == label
        assert fields["offset_text"][n][1:] == fields["encode_decode"][n][:-1]


def test_example_past_the_end_raises(tokenizer, small_corpora):
    data = CorpusBatches(small_corpora, tokenizer)
    with pytest.raises(IndexError, match=r"examples \[7\] out of range for 7"):
        data.examples([0, 7])
    with pytest.raises(IndexError):
        data.examples([-1])


def test_empty_corpus_is_refused(tokenizer, small_corpora):
    empty = Corpora(small_corpora.all_text, [], small_corpora.reasoning, small_corpora.consistency)
    with pytest.raises(ValueError, match="question_answering"):
        CorpusBatches(empty, tokenizer)


# --- padding --------------------------------------------------------------------------

def check_padded(batch: TokenBatch, seqs: list[list[int]], pad_id: int) -> None:
    """Element by element: tokens then padding, mask 1 then 0, T = longest."""
    assert batch.input_ids.dtype == torch.long and batch.attention_mask.dtype == torch.long
    assert tuple(batch.input_ids.shape) == (len(seqs), max(map(len, seqs)))
    assert batch.attention_mask.shape == batch.input_ids.shape
    for row, seq in enumerate(seqs):
        for col in range(batch.input_ids.shape[1]):
            real = col < len(seq)
            assert batch.input_ids[row, col].item() == (seq[col] if real else pad_id)
            assert batch.attention_mask[row, col].item() == int(real)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 511), min_size=1, max_size=12), min_size=1, max_size=6),
       st.sampled_from((1, 0, 511)))
def test_pad_sequences_pads_to_the_longest(seqs, pad_id):
    check_padded(pad_sequences(seqs, pad_id), seqs, pad_id)


def test_batch_padding_pads_each_field_to_its_longest_in_the_batch(tokenizer, small_corpora):
    data = CorpusBatches(small_corpora, tokenizer)
    for indices in ([0], [2, 5, 6], list(range(7))):
        batch = data.examples(indices)
        assert set(batch.inputs) == set(INPUT_NAMES) and set(batch.targets) == set(TARGET_NAMES)
        for field in TOKEN_FIELDS:
            tokens = batch.inputs[field] if field in batch.inputs else batch.targets[field]
            rows = [index % data.sizes[FIELD_CORPUS[field]] for index in indices]
            check_padded(tokens, [data.columns[field][row].tolist() for row in rows], tokenizer.pad_token_id)
        consistency = batch.targets["consistency"]
        assert consistency.dtype == torch.float32 and consistency.shape == (len(indices),)
        assert len(batch) == len(indices)


def test_pad_sequences_by_hand():
    batch = pad_sequences([[5, 6, 7], [8], torch.tensor([9, 10])], pad_id=1)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 1, 1], [9, 10, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="at least one"):
        pad_sequences([], pad_id=1)


def test_batch_to_moves_every_tensor(tokenizer, small_corpora):
    batch = CorpusBatches(small_corpora, tokenizer).examples([0, 1])
    moved = batch.to("meta")
    assert isinstance(moved, QaracBatch)
    tensors = [t for b in moved.inputs.values() for t in (b.input_ids, b.attention_mask)]
    tensors += [moved.targets["encode_decode"].input_ids, moved.targets["reasoning"].attention_mask,
                moved.targets["consistency"]]
    assert all(t.device.type == "meta" for t in tensors)
    assert batch.inputs["all_text"].input_ids.device.type == "cpu"


# --- order and loader -------------------------------------------------------------------

def epoch_order(data: CorpusBatches, epoch: int = 0, rank: int = 0, world_size: int = 1) -> list[int]:
    """The examples of an epoch in order (all_text is the largest corpus: its row is the example)."""
    return [row for rows in data.plan(epoch, rank, world_size) for row in rows["all_text"]]


def test_cycled_order_is_torchs_distributed_shuffle(tokenizer, small_corpora):
    """One process: the permutation `DistributedSampler` documents, randperm seeded with seed + epoch."""
    for seed, epoch in ((3, 0), (3, 1), (0, 2)):
        data = CorpusBatches(small_corpora, tokenizer, batch_size=3, seed=seed)
        expected = torch.randperm(7, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        assert epoch_order(data, epoch) == expected
    data = CorpusBatches(small_corpora, tokenizer, batch_size=3, seed=3)
    assert [len(rows["all_text"]) for rows in data.plan(0)] == [3, 3, 1]  # the last partial batch is kept
    assert epoch_order(data, 0) != epoch_order(data, 1) and sorted(epoch_order(data, 1)) == list(range(7))


def test_several_processes_split_the_epoch(tokenizer, small_corpora):
    data = CorpusBatches(small_corpora, tokenizer, batch_size=2, seed=5)
    whole = torch.randperm(7, generator=torch.Generator().manual_seed(5 + 1)).tolist()
    padded = whole + whole[:1]  # to a multiple of the 2 processes, repeating the first
    orders = [epoch_order(data, 1, rank, 2) for rank in range(2)]
    assert orders == [padded[0::2], padded[1::2]]
    assert sorted(set(orders[0] + orders[1])) == list(range(7))
    assert [len(data.plan(1, rank, 2)) for rank in range(2)] == [2, 2]


def test_legacy_batching_trains_in_one_process(tokenizer, small_corpora):
    from qarac.data.options import DataConfig

    data = CorpusBatches(small_corpora, tokenizer, DataConfig(batching="all_text_epoch"), batch_size=2)
    assert len(data.plan(0)) == 3
    with pytest.raises(ValueError, match="all_text_epoch .* one process"):
        data.plan(0, 0, 2)


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_gives_the_epochs_batches_and_leaves_the_global_rng_alone(tokenizer, small_corpora, workers):
    """The loader's start draws a seed: from the global RNG, it would shift every dropout mask after it."""
    data = CorpusBatches(small_corpora, tokenizer, batch_size=2, seed=4)
    rng = torch.get_rng_state()
    loaded = list(data.loader(epoch=1, start=1, num_workers=workers))
    assert torch.equal(torch.get_rng_state(), rng)
    expected = [data.build(rows, index) for index, rows in enumerate(data.plan(1)) if index >= 1]
    assert len(loaded) == len(expected) == 3
    for got, want in zip(loaded, expected):
        for name in INPUT_NAMES:
            assert torch.equal(got.inputs[name].input_ids, want.inputs[name].input_ids)
            assert torch.equal(got.inputs[name].attention_mask, want.inputs[name].attention_mask)
        assert torch.equal(got.targets["consistency"], want.targets["consistency"])


def test_sample_corpus_batches_end_to_end(tokenizer, corpora):
    batch = next(CorpusBatches(corpora, tokenizer, batch_size=16).batches())
    assert len(batch) == 16
    offset, target = batch.inputs["offset_text"], batch.targets["encode_decode"]
    assert offset.input_ids.shape == target.input_ids.shape
    assert torch.equal(offset.attention_mask, target.attention_mask)
    for row in range(16):
        n = int(target.attention_mask[row].sum())
        assert torch.equal(offset.input_ids[row, 1:n], target.input_ids[row, :n - 1])
        assert target.input_ids[row, n - 1].item() == tokenizer.eos_token_id
        assert offset.input_ids[row, 0].item() == tokenizer.bos_token_id
    assert set(batch.targets["consistency"].tolist()) <= {1.0, 0.0, -1.0}
