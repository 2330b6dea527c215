"""Corpora, tokenisation, the combined dataset, collate and the data loader."""

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset, DistributedSampler

from qarac.batch import INPUT_NAMES, TARGET_NAMES, QaracBatch, TokenBatch, pad_sequences
from qarac.data import (DEFAULT_DATA_DIR, Corpora, DataError, QaracDataset, collate,
                        encode_shifted, encode_texts, load_all_text, load_consistency,
                        load_question_answering, load_reasoning, make_dataloader)

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
    for text, ids in zip(texts, encode_texts(tokenizer, texts, 128)):
        assert ids == [0] + tokenizer.encode(text, add_special_tokens=False) + [2]


def test_offset_and_target_are_shifted_by_one(tokenizer, corpora):
    texts = corpora.all_text[:40]
    offsets, targets = encode_shifted(tokenizer, texts, 128)
    for text, offset, target in zip(texts, offsets, targets):
        body = tokenizer.encode(text, add_special_tokens=False)
        assert offset == [0] + body
        assert target == body + [2]
        assert offset[1:] == target[:-1]


def test_truncation_keeps_the_special_tokens(tokenizer):
    text = "All the members of the chess club are teachers who like tea."
    body = tokenizer.encode(text, add_special_tokens=False)
    assert len(body) > 6
    assert encode_texts(tokenizer, [text], 6) == [[0] + body[:4] + [2]]
    offsets, targets = encode_shifted(tokenizer, [text], 6)
    assert offsets == [[0] + body[:5]] and targets == [body[:5] + [2]]


def test_max_length_below_three_is_refused(tokenizer):
    with pytest.raises(ValueError, match="at least 3"):
        encode_texts(tokenizer, ["a"], 2)


# --- dataset ------------------------------------------------------------------------

def test_dataset_length_is_the_largest_corpus(tokenizer, corpora, small_corpora):
    assert len(QaracDataset(small_corpora, tokenizer)) == 7
    assert len(QaracDataset(corpora, tokenizer)) == max(corpora.sizes().values())


def test_smaller_corpora_are_cycled(tokenizer, small_corpora):
    dataset = QaracDataset(small_corpora, tokenizer)
    questions = [encode_texts(tokenizer, [q], 128)[0] for q, _ in small_corpora.question_answering]
    used = [questions.index(dataset[i]["question"].tolist()) for i in range(len(dataset))]
    assert used == [0, 1, 2, 0, 1, 2, 0]
    labels = [dataset[i]["consistency"].item() for i in range(len(dataset))]
    assert labels == [1, 0, -1, 1, 0, 1, 0]
    conclusions = [dataset[i]["reasoning"].tolist() for i in range(len(dataset))]
    assert conclusions[0::2] == [conclusions[0]] * 4 and conclusions[1::2] == [conclusions[1]] * 3
    assert conclusions[0] != conclusions[1]


def test_example_fields_match_their_corpus_rows(tokenizer, corpora):
    dataset = QaracDataset(corpora, tokenizer)
    for index in (0, 239, 240, 1000, len(dataset) - 1):
        example = dataset[index]
        text = corpora.all_text[index]
        question, answer = corpora.question_answering[index % 240]
        p0, p1, conclusion = corpora.reasoning[index % 240]
        s0, s1, label = corpora.consistency[index % 240]
        body = tokenizer.encode(conclusion, add_special_tokens=False)
        assert example["all_text"].tolist() == tokenizer.encode(text)
        assert example["question"].tolist() == tokenizer.encode(question)
        assert example["answer"].tolist() == tokenizer.encode(answer)
        assert example["proposition0"].tolist() == tokenizer.encode(p0)
        assert example["proposition1"].tolist() == tokenizer.encode(p1)
        assert example["statement0"].tolist() == tokenizer.encode(s0)
        assert example["statement1"].tolist() == tokenizer.encode(s1)
        assert example["conclusion_offset"].tolist() == [0] + body
        assert example["reasoning"].tolist() == body + [2]
        assert example["consistency"].item() == label
        assert example["offset_text"].tolist()[1:] == example["encode_decode"].tolist()[:-1]


def test_index_past_the_end_raises(tokenizer, small_corpora):
    dataset = QaracDataset(small_corpora, tokenizer)
    with pytest.raises(IndexError):
        dataset[7]
    # Python's fallback iteration stops at the IndexError: exactly one pass.
    assert len(list(dataset)) == 7


def test_empty_corpus_is_refused(tokenizer, small_corpora):
    empty = Corpora(small_corpora.all_text, [], small_corpora.reasoning, small_corpora.consistency)
    with pytest.raises(ValueError, match="question_answering"):
        QaracDataset(empty, tokenizer)


# --- collate ----------------------------------------------------------------------------

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


def make_example(lengths: dict[str, int], label: int, start: int) -> dict[str, torch.Tensor]:
    example = {name: torch.arange(start, start + lengths[name]) % 512 for name in TOKEN_FIELDS}
    example["consistency"] = torch.tensor(float(label))
    return example


examples_strategy = st.lists(
    st.tuples(st.fixed_dictionaries({name: st.integers(1, 12) for name in TOKEN_FIELDS}),
              st.sampled_from((1, 0, -1)), st.integers(5, 500)),
    min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(examples_strategy, st.sampled_from((1, 0, 511)))
def test_collate_pads_each_field_to_its_longest(drawn, pad_id):
    examples = [make_example(lengths, label, start) for lengths, label, start in drawn]
    batch = collate(examples, pad_id)
    assert set(batch.inputs) == set(INPUT_NAMES)
    assert set(batch.targets) == set(TARGET_NAMES)
    for name in INPUT_NAMES:
        check_padded(batch.inputs[name], [ex[name].tolist() for ex in examples], pad_id)
    for name in ("encode_decode", "reasoning"):
        check_padded(batch.targets[name], [ex[name].tolist() for ex in examples], pad_id)
    consistency = batch.targets["consistency"]
    assert consistency.dtype == torch.float32 and consistency.shape == (len(examples),)
    assert consistency.tolist() == [float(label) for _, label, _ in drawn]
    assert len(batch) == len(examples)


def test_pad_sequences_by_hand():
    batch = pad_sequences([[5, 6, 7], [8], torch.tensor([9, 10])], pad_id=1)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 1, 1], [9, 10, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="at least one"):
        pad_sequences([], pad_id=1)


def test_batch_to_moves_every_tensor():
    batch = collate([make_example({n: 3 for n in TOKEN_FIELDS}, 1, 7)] * 2, pad_id=1)
    moved = batch.to("meta")
    assert isinstance(moved, QaracBatch)
    tensors = [t for b in moved.inputs.values() for t in (b.input_ids, b.attention_mask)]
    tensors += [moved.targets["encode_decode"].input_ids, moved.targets["reasoning"].attention_mask,
                moved.targets["consistency"]]
    assert all(t.device.type == "meta" for t in tensors)
    assert batch.inputs["all_text"].input_ids.device.type == "cpu"


# --- data loader -------------------------------------------------------------------------

class IndexDataset(Dataset):
    """Examples that carry their own index as the consistency label, to trace the order."""

    pad_id = 1

    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        example = make_example({n: 1 + index % 4 for n in TOKEN_FIELDS}, 0, index)
        example["consistency"] = torch.tensor(float(index))
        return example


def epoch_order(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch.targets["consistency"].tolist()]


def test_loader_order_is_seeded_and_covers_the_dataset():
    dataset = IndexDataset(23)
    first = epoch_order(make_dataloader(dataset, 4, shuffle=True, seed=3))
    assert sorted(first) == list(range(23))
    assert first != list(range(23))
    assert epoch_order(make_dataloader(dataset, 4, shuffle=True, seed=3)) == first
    assert epoch_order(make_dataloader(dataset, 4, shuffle=True, seed=4)) != first
    assert epoch_order(make_dataloader(dataset, 4, shuffle=False)) == list(range(23))


def test_loader_batches_have_the_requested_size():
    sizes = [len(b) for b in make_dataloader(IndexDataset(23), 4, shuffle=False)]
    assert sizes == [4] * 5 + [3]
    sizes = [len(b) for b in make_dataloader(IndexDataset(23), 4, shuffle=False, drop_last=True)]
    assert sizes == [4] * 5


def test_loader_with_distributed_sampler_splits_the_dataset():
    dataset = IndexDataset(24)
    orders = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)
        orders.append(epoch_order(make_dataloader(dataset, 4, shuffle=False, seed=0,
                                                  sampler=sampler)))
    assert len(orders[0]) == len(orders[1]) == 12
    assert sorted(orders[0] + orders[1]) == list(range(24))


def test_loader_refuses_shuffle_with_a_sampler():
    dataset = IndexDataset(4)
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="shuffle=False"):
        make_dataloader(dataset, 2, shuffle=True, seed=0, sampler=sampler)


def test_sample_corpus_batches_end_to_end(tokenizer, corpora):
    loader = make_dataloader(QaracDataset(corpora, tokenizer), 16, shuffle=True, seed=0)
    batch = next(iter(loader))
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
