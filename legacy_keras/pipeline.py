"""The original's input pipeline, as its code ran it (docs/legacy.md §1.5).

Mirrors the original's `CorpusLoader`, `CorpusRepeater` and `CombinedCorpus`
and the `all_text` composition of its `prepare_training_datasets`:

- every text column is encoded by a `tokenizers.Tokenizer` with
  `add_special_tokens=False`, so encoder inputs carry no `<s>`/`</s>`;
- the decoder prefix and suffix are `encode('<s>')` and `encode('</s>')` with
  the RoBERTa post-processor on: `<s> <s> </s>` and `<s> </s> </s>`; decoder
  input = prefix + text, target = text + suffix (n + 3 tokens each);
- each field is padded with the pad id to one length for the whole corpus:
  the longest text for an encoder field, the longest text + 1 for a decoder
  input or target (not + 3), and padding never truncates;
- batches of 32: `all_text` is shuffled each epoch and sets the epoch
  (len // 32 batches, the last partial batch dropped), the other corpora are
  shuffled and repeated to its length;
- the attention mask is `input_ids != pad_id`, the consistency label a float,
  the question-answering target zeros of width 768 (roberta-base's hidden
  size, a constant in the original: pass the model's width for another model).

A batch holding a decoder text within two tokens of its corpus' longest is
ragged (that row stays n + 3 long, the others are padded to longest + 1) and
cannot become a tensor: `tf.constant` raises, as the original's batch did.
`RaggedBatch` and `find_ragged_batches` say which batch, field and lengths.

Token ids are kept as Python lists where the original kept `tokenizers.Encoding`
objects: `Encoding.merge` is list concatenation and `Encoding.pad(n)` appends
pad ids up to n and leaves a longer encoding as it is, which is what `_pad` does.

Shuffling: the original's loaders each drew from an unseeded
`numpy.random.default_rng()`; here loader k (all_text 0, question_answering 1,
reasoning 2, consistency 3) draws from `numpy.random.default_rng([seed, k])`,
shuffling its list of rows in place at the start of every pass, as the original
did, so a seed fixes the order (the port's legacy data preset uses the same rule).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

BATCH_SIZE = 32
# The original's question-answering target: torch.zeros((n, 768)), roberta-base's width.
QA_TARGET_WIDTH = 768
CORPUS_NAMES = ("all_text", "question_answering", "reasoning", "consistency")
# Corpus -> (text inputs, {text column: (decoder input name, target name)}, label column),
# the arguments the original's CombinedCorpus gave its CorpusLoaders.
LOADER_SPECS: Mapping[str, tuple[tuple[str, ...], dict[str, tuple[str, str]], str | None]] = {
    "all_text": (("all_text",), {"all_text": ("offset_text", "encode_decode")}, None),
    "question_answering": (("question", "answer"), {}, None),
    "reasoning": (("proposition0", "proposition1"), {"conclusion": ("conclusion_offset", "reasoning")}, None),
    "consistency": (("statement0", "statement1"), {}, "consistency"),
}
# The columns `prepare_training_datasets` concatenated into all_text, in its order,
# as (corpus, column) of the four CSV layouts: WikiQA's answers, Avicenna's
# Premise 1 twice (Premise 2 never), the conclusions, SNLI's sentence1 and sentence2.
ALL_TEXT_SOURCES = (("question_answering", "answer"), ("reasoning", "proposition0"),
                    ("reasoning", "proposition0"), ("reasoning", "conclusion"),
                    ("consistency", "statement0"), ("consistency", "statement1"))
OUTPUT_ORDER = ("encode_decode", "question_answering", "reasoning", "consistency")


def _csv_columns(name: str) -> tuple[str, ...]:
    inputs, outputs, label = LOADER_SPECS[name]
    return tuple(inputs) + tuple(outputs) + ((label,) if label else ())


def read_corpus(path: str | os.PathLike, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a CSV with a header (other columns, e.g. pandas' index, ignored).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a column is missing, a cell empty, or there are no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [column for column in columns if column not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header has {header}")
        data: dict[str, list[str]] = {column: [] for column in columns}
        for row in reader:
            for column in columns:
                value = row[column]
                if value is None or not value.strip():
                    raise ValueError(f"{path}, line {reader.line_num}: empty cell in column {column!r}")
                data[column].append(value)
    if not data[columns[0]]:
        raise ValueError(f"{path}: no data rows")
    return data


def compose_all_text(directory: str | os.PathLike) -> list[str]:
    """all_text as `prepare_training_datasets` composed it, from the other three corpora.

    The original concatenated WikiQA's answers, Avicenna's `Premise 1` twice,
    the valid syllogisms' conclusions and SNLI's two sentences. From the four
    CSV layouts only the rows those files hold are available: the correct
    question-answer pairs (the original took every WikiQA answer), the valid
    syllogisms (it took Premise 1 of every syllogism) and the labelled SNLI pairs.
    """
    directory = Path(directory)
    texts: list[str] = []
    for corpus, column in ALL_TEXT_SOURCES:
        texts += read_corpus(directory / f"{corpus}.csv", (column,))[column]
    return texts


class CorpusLoader:
    """One corpus, tokenised once; each pass yields its rows in a new random order.

    Args:
        data: column -> texts (and the label column, as strings).
        tokenizer: a `tokenizers.Tokenizer` with a RoBERTa post-processor.
        text_inputs: columns that go to the inputs as they are.
        text_outputs: column -> (decoder input name, target name).
        label: a numeric column that goes to the targets as a float.
        rng: the loader's random generator.
    """

    def __init__(self, data: Mapping[str, Sequence[str]], tokenizer, text_inputs: Sequence[str],
                 text_outputs: Mapping[str, tuple[str, str]], label: str | None, rng: np.random.Generator):
        self.text_inputs = tuple(text_inputs)
        self.text_outputs = dict(text_outputs)
        self.label = label
        self.rng = rng
        columns = list(dict.fromkeys([*self.text_inputs, *self.text_outputs]))
        tokenized = {column: [encoding.ids for encoding in
                              tokenizer.encode_batch(list(data[column]), add_special_tokens=False)]
                     for column in columns}
        self.n_rows = len(tokenized[columns[0]])
        if label is not None:
            tokenized[label] = [float(value) for value in data[label]]
        self.dataset = [{column: tokenized[column][i] for column in tokenized} for i in range(self.n_rows)]
        self.start_doc = tokenizer.encode("<s>").ids  # post-processed: <s> <s> </s>
        self.end_doc = tokenizer.encode("</s>").ids  # post-processed: <s> </s> </s>

    def __len__(self) -> int:
        return self.n_rows

    def max_lengths(self) -> dict[str, int]:
        """Padded length per field: the longest text; + 1 for decoder inputs and targets."""
        lengths = {column: max(len(row[column]) for row in self.dataset) for column in self.text_inputs}
        for column, (x_name, y_name) in self.text_outputs.items():
            longest = max(len(row[column]) for row in self.dataset)
            lengths[x_name] = longest + 1
            lengths[y_name] = longest + 1
        return lengths

    def __iter__(self) -> Iterator[tuple[dict, dict]]:
        self.rng.shuffle(self.dataset)  # in place: each pass reshuffles the last order
        for row in self.dataset:
            x = {column: row[column] for column in self.text_inputs}
            y = {}
            for column, (x_name, y_name) in self.text_outputs.items():
                x[x_name] = self.start_doc + row[column]
                y[y_name] = row[column] + self.end_doc
            if self.label is not None:
                y[self.label] = row[self.label]
            yield x, y


class CorpusRepeater:
    """A corpus repeated (reshuffled on every pass) until `n_samples` rows were yielded."""

    def __init__(self, corpus: CorpusLoader, n_samples: int):
        self.corpus = corpus
        self.n_samples = n_samples

    def max_lengths(self) -> dict[str, int]:
        return self.corpus.max_lengths()

    def __iter__(self):
        produced = 0
        while produced < self.n_samples:
            for sample in self.corpus:
                yield sample
                produced += 1
                if produced == self.n_samples:
                    return


@dataclass(frozen=True)
class RaggedBatch:
    """A batch whose field cannot become a tensor: its rows have different lengths after padding."""

    batch: int
    field: str
    padded_length: int
    row_lengths: tuple[int, ...]
    longest_text: int

    def explain(self) -> str:
        longer = sorted({n for n in self.row_lengths if n != self.padded_length})
        return (f"batch {self.batch}, field {self.field!r}: padded to {self.padded_length} "
                f"(longest text {self.longest_text} + 1) but rows of {longer} tokens stay longer "
                f"(text + the 3-token affix; padding never truncates), so the rows are ragged")


class RaggedBatchError(ValueError):
    """`tf.constant` refused a ragged field, as in the original's batch; carries the `RaggedBatch`."""

    def __init__(self, ragged: RaggedBatch):
        super().__init__(ragged.explain())
        self.ragged = ragged


class CombinedCorpus:
    """The original's training data: batches of one row of each corpus per example.

    Iterating yields one epoch of `(X, Y)` batches: X maps each trainer input to
    `{"input_ids", "attention_mask"}` int32 tensors (B, L_field), Y maps
    `encode_decode` / `reasoning` to int32 (B, L_field), `question_answering` to
    float32 zeros (B, qa_target_width) and `consistency` to float32 (B,).

    Args:
        tokenizer: a `tokenizers.Tokenizer` with a RoBERTa post-processor.
        corpora: corpus name -> {column: texts}, as `read_corpora` returns.
        seed: fixes the loaders' shuffles (see the module docstring).
        batch_size: 32 in the original.
        qa_target_width: 768 in the original (roberta-base's hidden size).
    """

    def __init__(self, tokenizer, corpora: Mapping[str, Mapping[str, Sequence[str]]], seed: int = 0,
                 batch_size: int = BATCH_SIZE, qa_target_width: int = QA_TARGET_WIDTH):
        self.batch_size = batch_size
        self.qa_target_width = qa_target_width
        loaders = {name: CorpusLoader(corpora[name], tokenizer, *LOADER_SPECS[name],
                                      rng=np.random.default_rng([seed, index]))
                   for index, name in enumerate(CORPUS_NAMES)}
        self.all_text = loaders["all_text"]
        n_samples = len(self.all_text)
        self.n_batches = n_samples // batch_size
        self.question_answering = CorpusRepeater(loaders["question_answering"], n_samples)
        self.reasoning = CorpusRepeater(loaders["reasoning"], n_samples)
        self.consistency = CorpusRepeater(loaders["consistency"], n_samples)
        self.pad_token = tokenizer.token_to_id("<pad>")
        self.max_lengths: dict[str, int] = {}
        for corpus in (self.all_text, self.question_answering, self.reasoning, self.consistency):
            self.max_lengths.update(corpus.max_lengths())
        self._longest_text = {name: length - 1 for name, length in self.max_lengths.items()
                              if name in ("offset_text", "encode_decode", "conclusion_offset", "reasoning")}

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, tokenizer, compose: bool = True,
                       **kwargs) -> CombinedCorpus:
        """The four CSVs of `directory`; all_text composed from the other three unless `compose=False`."""
        return cls(tokenizer, read_corpora(directory, compose), **kwargs)

    def __len__(self) -> int:
        return self.n_batches

    def samples(self) -> Iterator[tuple[dict, dict]]:
        for sample in zip(self.all_text, self.question_answering, self.reasoning, self.consistency):
            x, y = {}, {}
            for part_x, part_y in sample:
                x.update(part_x)
                y.update(part_y)
            yield x, y

    def raw_batches(self) -> Iterator[list[tuple[dict, dict]]]:
        """One epoch of unpadded samples, grouped by `batch_size`; the last partial group dropped."""
        batch = []
        for sample in self.samples():
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield batch
                batch = []

    def __iter__(self):
        for index, samples in enumerate(self.raw_batches()):
            yield self.batch(samples, index)

    def padded_rows(self, samples, key: str, inputs: bool = True) -> list[list[int]]:
        """The field's rows padded to its corpus length (longer rows left as they are)."""
        part = 0 if inputs else 1
        return [_pad(sample[part][key], self.max_lengths[key], self.pad_token) for sample in samples]

    def batch(self, samples, index: int = 0):
        """(X, Y) tensors of one batch.

        Raises:
            RaggedBatchError: a field whose rows differ in length after padding.
        """
        from legacy_keras._tf import tf

        def tensor(rows, key):
            try:
                return tf.constant(rows, dtype=tf.int32)
            except ValueError:  # "Can't convert non-rectangular Python sequence to Tensor."
                raise RaggedBatchError(self._ragged(index, key, rows)) from None

        x = {}
        for key in samples[0][0]:
            ids = tensor(self.padded_rows(samples, key), key)
            x[key] = {"input_ids": ids, "attention_mask": tf.cast(tf.not_equal(ids, self.pad_token), tf.int32)}
        y = {key: tensor(self.padded_rows(samples, key, inputs=False), key)
             for key in samples[0][1] if key != "consistency"}
        y["consistency"] = tf.constant([sample[1]["consistency"] for sample in samples], dtype=tf.float32)
        y["question_answering"] = tf.zeros((len(samples), self.qa_target_width), dtype=tf.float32)
        return x, {key: y[key] for key in OUTPUT_ORDER}

    def _ragged(self, index: int, key: str, rows) -> RaggedBatch:
        return RaggedBatch(index, key, self.max_lengths[key], tuple(len(row) for row in rows),
                           self._longest_text.get(key, self.max_lengths[key]))

    def find_ragged(self, index: int, samples) -> RaggedBatch | None:
        """The first ragged field of a batch (inputs first, then targets), without building tensors."""
        for part, names in ((True, samples[0][0]), (False, samples[0][1])):
            for key in names:
                if key == "consistency":
                    continue
                rows = self.padded_rows(samples, key, inputs=part)
                if len({len(row) for row in rows}) > 1:
                    return self._ragged(index, key, rows)
        return None


def _pad(ids: list[int], length: int, pad_id: int) -> list[int]:
    """`Encoding.pad(length)`: pad ids appended up to `length`; a longer row is left as it is."""
    return ids + [pad_id] * (length - len(ids))


def read_corpora(directory: str | os.PathLike, compose: bool = True) -> dict[str, dict[str, list[str]]]:
    """The four corpora of `directory` as column -> texts, all_text composed or read.

    Raises:
        FileNotFoundError, ValueError: see `read_corpus`.
    """
    directory = Path(directory)
    corpora = {name: read_corpus(directory / f"{name}.csv", _csv_columns(name))
               for name in CORPUS_NAMES if name != "all_text"}
    if compose:
        corpora["all_text"] = {"all_text": compose_all_text(directory)}
    else:
        corpora["all_text"] = read_corpus(directory / "all_text.csv", ("all_text",))
    return corpora


def find_ragged_batches(corpus: CombinedCorpus) -> list[RaggedBatch]:
    """Every ragged batch of one epoch of `corpus` (consumes that epoch of its shuffles)."""
    found = []
    for index, samples in enumerate(corpus.raw_batches()):
        ragged = corpus.find_ragged(index, samples)
        if ragged is not None:
            found.append(ragged)
    return found


def legacy_tokenizer(model_dir: str | os.PathLike | None = None):
    """The `tokenizers.Tokenizer` the original used: the model directory's, else the embedded one.

    Raises:
        FileNotFoundError: the directory has no tokenizer.json and is not the default.
    """
    from tokenizers import Tokenizer

    if model_dir is not None and (Path(model_dir) / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    from qarac.tokenizer import DEFAULT_TOKENIZER_DIR

    return Tokenizer.from_file(str(DEFAULT_TOKENIZER_DIR / "tokenizer.json"))
