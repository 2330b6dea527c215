"""The four QARAC corpora, their tokenisation, and batching on `torch.utils.data`.

Layouts (CSV with a header line, as the original's data files):

    all_text.csv            all_text
    question_answering.csv  question, answer
    reasoning.csv           proposition0, proposition1, conclusion
    consistency.csv         statement0, statement1, consistency (1, 0 or -1)

One example combines one row of each corpus; the smaller corpora are cycled to
the length of the largest, as the original repeated them (docs/legacy.md §1.4).
Decoder inputs are `<s>`-prefixed and their targets `</s>`-suffixed, so that
`offset[1:] == target[:-1]`: teacher forcing shifted by one.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from qarac.batch import INPUT_NAMES, TARGET_NAMES, QaracBatch, TokenBatch, pad_sequences

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "assets" / "data"
# The tiny preset's 128 positions.
DEFAULT_MAX_LENGTH = 128
# Corpus name -> the columns its CSV must have (extra columns are ignored, but every row has a
# field for each column of its header).
CORPUS_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "all_text": ("all_text",),
    "question_answering": ("question", "answer"),
    "reasoning": ("proposition0", "proposition1", "conclusion"),
    "consistency": ("statement0", "statement1", "consistency"),
}
# SNLI's entailment, neutral and contradiction.
CONSISTENCY_LABELS = (1, 0, -1)


class DataError(ValueError):
    """A corpus file that cannot be read; the message names the file and line."""


# --- CSV loading ----------------------------------------------------------------

def _read_text(path: Path) -> str:
    """The file decoded as UTF-8 (a byte-order mark is allowed and dropped).

    Raises:
        DataError: the file is missing, empty, or not valid UTF-8.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such corpus file") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected a CSV header line and rows")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: undecodable bytes {raw[error.start:error.end]!r} "
                        "(the file must be UTF-8)") from None


# What a field spanning lines or a runaway field almost always means in these corpora.
UNBALANCED_QUOTE = "is a '\"' quote unbalanced there? (a quoted field runs on to the next quote)"


def _check_one_line(row: Mapping[str, str | list[str] | None], path: Path, start: int, end: int) -> None:
    """Every field of these layouts is one line: a field spanning lines means the CSV reader
    was swallowing rows (one stray quote turned 1406 rows into 4).

    Raises:
        DataError: naming the file, the line the row starts on and the field.
    """
    if start == end:
        return
    for name, value in row.items():
        values = value if isinstance(value, list) else [value]  # extra fields come as a list
        if any(isinstance(text, str) and ("\n" in text or "\r" in text) for text in values):
            raise DataError(f"{path}, line {start}: the {name!r} field spans lines {start}-{end}, but fields "
                            f"hold one line each; {UNBALANCED_QUOTE}")


def _check_field_count(row: Mapping[str, str | list[str] | None], header: Sequence[str], path: Path,
                       line: int) -> None:
    """A row of as many fields as the header: an unquoted comma in a text splits it, and the
    reader would file the pieces under the wrong columns ('Where, exactly, ...' became 'Where').

    Raises:
        DataError: naming the file, the line and both counts.
    """
    extra = row.get(None) or []  # DictReader files the fields past the header under None
    count = len(header) + len(extra) if extra else sum(row[name] is not None for name in header)
    if count != len(header):
        hint = " (a text holding a comma must be quoted: \"like, this\")" if count > len(header) else ""
        raise DataError(f"{path}, line {line}: {count} field{'s' if count != 1 else ''}, but the header has "
                        f"{len(header)} ({', '.join(header)}){hint}")


def _csv_cause(error: csv.Error, path: Path, line: int) -> str:
    """The csv module's error with its likely cause: an oversized field is named as such, and
    blamed on a quote only where the line holds one."""
    if "field larger than field limit" in str(error):
        text = _read_text(path).splitlines()
        quoted = line - 1 < len(text) and '"' in text[line - 1]
        cause = f"; {UNBALANCED_QUOTE}" if quoted else "; a corpus field holds one text, not a document"
        return f"a field larger than the csv field limit ({csv.field_size_limit()} characters): {error}{cause}"
    return f"{error}; {UNBALANCED_QUOTE}"


def read_rows(path: str | os.PathLike, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV with a header, checking that `columns` are present and filled.

    Args:
        path: the CSV file.
        columns: required column names; other columns are ignored.

    Returns:
        (line number, {column: text}) per data row, the line number being the
        row's last physical line (1 is the header).

    Raises:
        DataError: empty or undecodable file, a missing column, no data rows,
            a row with more or fewer fields than the header, an empty cell in
            a required column, a field spanning lines (an unbalanced quote) or
            one over the csv module's field limit (128 KiB).
    """
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = reader.fieldnames or []
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(f"{path}, line 1: missing column(s) {missing}; the header has {header}, "
                        f"expected {list(columns)}")
    rows = []
    line = 1  # the header's
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            _check_one_line(row, path, start, line)
            _check_field_count(row, header, path, line)
            for name in columns:
                # A short row leaves None in the columns it lacks.
                if row[name] is None or not row[name].strip():
                    raise DataError(f"{path}, line {line}: empty cell in column {name!r}")
            rows.append((line, {name: row[name] for name in columns}))
    except csv.Error as error:
        raise DataError(f"{path}, line {line + 1}: {_csv_cause(error, path, line + 1)}") from None
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    return rows


def _parse_label(value: str, path: Path, line: int) -> int:
    """A consistency label: 1, 0 or -1 (written as integers or as 1.0, 0.0, -1.0)."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in CONSISTENCY_LABELS:
        raise DataError(f"{path}, line {line}: bad consistency label {value!r}; "
                        f"expected one of {list(CONSISTENCY_LABELS)}")
    return int(number)


def load_all_text(path: str | os.PathLike) -> list[str]:
    """Sentences of an `all_text` CSV."""
    return [row["all_text"] for _, row in read_rows(path, CORPUS_COLUMNS["all_text"])]


def load_question_answering(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(question, answer) pairs."""
    rows = read_rows(path, CORPUS_COLUMNS["question_answering"])
    return [(row["question"], row["answer"]) for _, row in rows]


def load_reasoning(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(proposition0, proposition1, conclusion) syllogisms."""
    rows = read_rows(path, CORPUS_COLUMNS["reasoning"])
    return [(row["proposition0"], row["proposition1"], row["conclusion"]) for _, row in rows]


def load_consistency(path: str | os.PathLike) -> list[tuple[str, str, int]]:
    """(statement0, statement1, label) pairs, label in {1, 0, -1}.

    Raises:
        DataError: also for a label other than 1, 0 or -1.
    """
    path = Path(path)
    rows = read_rows(path, CORPUS_COLUMNS["consistency"])
    return [(row["statement0"], row["statement1"], _parse_label(row["consistency"], path, line))
            for line, row in rows]


@dataclass(frozen=True)
class Corpora:
    """The four corpora as loaded, untokenised."""

    all_text: list[str]
    question_answering: list[tuple[str, str]]
    reasoning: list[tuple[str, str, str]]
    consistency: list[tuple[str, str, int]]

    @classmethod
    def from_directory(cls, directory: str | os.PathLike = DEFAULT_DATA_DIR) -> Corpora:
        """Load `<name>.csv` for each corpus name in CORPUS_COLUMNS."""
        directory = Path(directory)
        return cls(load_all_text(directory / "all_text.csv"),
                   load_question_answering(directory / "question_answering.csv"),
                   load_reasoning(directory / "reasoning.csv"),
                   load_consistency(directory / "consistency.csv"))

    def sizes(self) -> dict[str, int]:
        """Rows per corpus."""
        return {"all_text": len(self.all_text),
                "question_answering": len(self.question_answering),
                "reasoning": len(self.reasoning), "consistency": len(self.consistency)}


# --- tokenisation ----------------------------------------------------------------

def _check_max_length(max_length: int) -> None:
    # <s>, one token and </s>: anything shorter cannot hold a text.
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 (<s> token </s>), got {max_length}")


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Full encodings `<s> text </s>`, truncated to `max_length` (keeping `</s>`).

    Args:
        tokenizer: a RoBERTa tokenizer.
        texts: N texts.
        max_length: longest encoding, special tokens included.

    Returns:
        N lists of token ids.
    """
    _check_max_length(max_length)
    return tokenizer(list(texts), add_special_tokens=True, truncation=True,
                     max_length=max_length)["input_ids"]


def encode_shifted(tokenizer, texts: Sequence[str],
                   max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Teacher-forcing pairs: decoder input `<s> text` and target `text </s>`.

    The two have the same length L <= max_length and `offset[1:] == target[:-1]`.

    Args:
        tokenizer: a RoBERTa tokenizer.
        texts: N texts.
        max_length: longest sequence; the text is cut to max_length - 1 tokens.

    Returns:
        (offsets, targets), each N lists of token ids.
    """
    _check_max_length(max_length)
    bodies = tokenizer(list(texts), add_special_tokens=False, truncation=True,
                       max_length=max_length - 1)["input_ids"]
    offsets = [[tokenizer.bos_token_id] + body for body in bodies]
    targets = [body + [tokenizer.eos_token_id] for body in bodies]
    return offsets, targets


class TokenColumn:
    """Variable-length token sequences stored flat: one int32 array and offsets.

    Millions of small Python lists (SNLI has 550k pairs) would cost far more
    memory than the tokens themselves.
    """

    def __init__(self, seqs: Sequence[Sequence[int]]):
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        self.offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
        self.values = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32,
                                  count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> torch.Tensor:
        """Sequence `index` as a (L,) int64 tensor."""
        start, end = self.offsets[index], self.offsets[index + 1]
        return torch.from_numpy(self.values[start:end].astype(np.int64))


# --- dataset ---------------------------------------------------------------------

# Field -> corpus it is drawn from; the dataset cycles each corpus separately.
FIELD_CORPUS: Mapping[str, str] = {
    "all_text": "all_text", "offset_text": "all_text", "encode_decode": "all_text",
    "question": "question_answering", "answer": "question_answering",
    "proposition0": "reasoning", "proposition1": "reasoning",
    "conclusion_offset": "reasoning", "reasoning": "reasoning",
    "statement0": "consistency", "statement1": "consistency", "consistency": "consistency",
}


class QaracDataset(Dataset):
    """One example of each of the four objectives per index.

    Its length is that of the largest corpus; example i takes row
    `i % len(corpus)` of each corpus, so the smaller corpora are repeated, as in
    the original. Everything is tokenised once, up front.

    An example is a dict: each name of INPUT_NAMES and the targets
    `encode_decode`, `reasoning` map to a (L,) int64 tensor, `consistency` to a
    float32 scalar tensor.
    """

    def __init__(self, corpora: Corpora, tokenizer, max_length: int = DEFAULT_MAX_LENGTH):
        """Tokenise the corpora.

        Args:
            corpora: the four corpora.
            tokenizer: a RoBERTa tokenizer (fast, from `qarac.tokenizer`).
            max_length: longest token sequence of any field.

        Raises:
            ValueError: a corpus is empty, or max_length < 3.
        """
        empty = [name for name, size in corpora.sizes().items() if size == 0]
        if empty:
            raise ValueError(f"corpora {empty} are empty; every objective needs rows")
        self.pad_id = tokenizer.pad_token_id
        self.max_length = max_length
        self.sizes = corpora.sizes()
        self.columns = self._tokenise(corpora, tokenizer, max_length)
        self.labels = torch.tensor([label for *_, label in corpora.consistency],
                                   dtype=torch.float32)

    @staticmethod
    def _tokenise(corpora: Corpora, tokenizer, max_length: int) -> dict[str, TokenColumn]:
        def full(texts):
            return TokenColumn(encode_texts(tokenizer, texts, max_length))

        def shifted(texts):
            return tuple(map(TokenColumn, encode_shifted(tokenizer, texts, max_length)))

        question, answer = zip(*corpora.question_answering)
        proposition0, proposition1, conclusion = zip(*corpora.reasoning)
        statement0, statement1, _ = zip(*corpora.consistency)
        offset_text, encode_decode = shifted(corpora.all_text)
        conclusion_offset, reasoning = shifted(conclusion)
        return {
            "all_text": full(corpora.all_text), "offset_text": offset_text,
            "encode_decode": encode_decode,
            "question": full(question), "answer": full(answer),
            "proposition0": full(proposition0), "proposition1": full(proposition1),
            "conclusion_offset": conclusion_offset, "reasoning": reasoning,
            "statement0": full(statement0), "statement1": full(statement1),
        }

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, tokenizer,
                       max_length: int = DEFAULT_MAX_LENGTH) -> QaracDataset:
        """Load the four CSVs from `directory` and tokenise them."""
        return cls(Corpora.from_directory(directory), tokenizer, max_length)

    def __len__(self) -> int:
        return max(self.sizes.values())

    def row(self, index: int, field: str) -> int:
        """The corpus row a field of example `index` comes from (the cycling)."""
        return index % self.sizes[FIELD_CORPUS[field]]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} out of range for {len(self)} examples")
        example = {name: column[self.row(index, name)] for name, column in self.columns.items()}
        example["consistency"] = self.labels[self.row(index, "consistency")]
        return example


# --- batching --------------------------------------------------------------------

def collate(examples: Sequence[Mapping[str, torch.Tensor]], pad_id: int) -> QaracBatch:
    """Pad a list of examples into a `QaracBatch`.

    Each field is padded on its own, to the longest sequence of that field in
    the batch. Token targets are padded with `pad_id` too; their mask marks the
    real target tokens.

    Args:
        examples: B examples as returned by `QaracDataset.__getitem__`.
        pad_id: the tokenizer's pad id.

    Returns:
        The batch: inputs (B, T_field) each, token targets (B, T_target) each,
        consistency (B,) float32.
    """
    inputs = {name: pad_sequences([ex[name] for ex in examples], pad_id)
              for name in INPUT_NAMES}
    targets = {name: pad_sequences([ex[name] for ex in examples], pad_id)
               for name in TARGET_NAMES if name != "consistency"}
    targets["consistency"] = torch.stack(
        [torch.as_tensor(ex["consistency"], dtype=torch.float32) for ex in examples])  # (B,)
    return QaracBatch(inputs, targets)


def make_dataloader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                    sampler: Sampler | None = None, *, pad_id: int | None = None,
                    num_workers: int = 0, drop_last: bool = False,
                    pin_memory: bool = False) -> DataLoader:
    """A deterministic `DataLoader` of `QaracBatch`es.

    The shuffle order comes from a `torch.Generator` seeded with `seed` (the
    loader's `generator`, whose state a checkpoint can save), never from the
    global RNG. With a `sampler` (e.g. `DistributedSampler(dataset,
    shuffle=True, seed=seed)`) the sampler owns the order and `shuffle` must be
    False.

    Args:
        dataset: a `QaracDataset`, or any dataset of its examples.
        batch_size: examples per batch (per process under DDP).
        shuffle: draw a new permutation each epoch.
        seed: seed of the loader's generator.
        sampler: optional sampler, for instance a `DistributedSampler`.
        pad_id: pad id; defaults to `dataset.pad_id`.
        num_workers: worker processes (tokenisation is done up front, so 0 is
            usually enough).
        drop_last: drop a final incomplete batch.
        pin_memory: pin batches for faster host-to-GPU copies.

    Returns:
        The loader.

    Raises:
        ValueError: both `shuffle` and a `sampler`, or no pad id to be found.
    """
    if sampler is not None and shuffle:
        raise ValueError("pass shuffle=False with a sampler: the sampler decides the order "
                         "(DistributedSampler(dataset, shuffle=True, seed=...))")
    if pad_id is None:
        pad_id = getattr(dataset, "pad_id", None)
    if pad_id is None:
        raise ValueError("the dataset has no pad_id attribute; pass pad_id=tokenizer.pad_token_id")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      collate_fn=functools.partial(collate, pad_id=pad_id),
                      num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
                      generator=generator)


# --- data options: the default pipeline and the legacy one (docs/legacy.md §1.5) ----

# Option name -> the value that reproduces the legacy's input pipeline
# (`legacy_keras.pipeline`, the original's CorpusLoader / CombinedCorpus).
LEGACY_DATA_VALUES: Mapping[str, Any] = MappingProxyType({
    "encoder_special_tokens": False,
    "decoder_affixes": "post_processor",
    "padding": "corpus",
    "truncate": False,
    "batching": "all_text_epoch",
    "batch_size": 32,
    "all_text": "composed",
})
_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "decoder_affixes": ("single", "post_processor"),
    "padding": ("batch", "corpus", "corpus_fit"),
    "batching": ("cycled", "all_text_epoch"),
    "all_text": ("file", "composed"),
})
# Corpus -> its index in the legacy loaders' seeding, numpy.random.default_rng([seed, index]).
CORPUS_ORDER = ("all_text", "question_answering", "reasoning", "consistency")
ENCODER_FIELDS = ("all_text", "question", "answer", "proposition0", "proposition1", "statement0", "statement1")
# Decoder text column -> (decoder input field, target field).
DECODER_FIELDS = {"all_text": ("offset_text", "encode_decode"), "conclusion": ("conclusion_offset", "reasoning")}


@dataclass(frozen=True)
class DataConfig:
    """How corpora become batches. The default is the corrected pipeline;
    `DataConfig().legacy()` reproduces the legacy's batches exactly.

    Attributes:
        encoder_special_tokens: encoder inputs are `<s> text </s>`. Legacy
            (False): every text was encoded with `add_special_tokens=False`, so
            encoder inputs carried no `<s>`/`</s>`.
        decoder_affixes: "single": decoder input `<s> text`, target
            `text </s>`, a one-token shift. Legacy ("post_processor"): prefix and
            suffix were `encode('<s>')` and `encode('</s>')` with the RoBERTa
            post-processor on, `<s> <s> </s>` and `<s> </s> </s>`, so position i
            was trained to predict the token three places ahead.
        padding: "batch": each field padded to its longest row in the batch.
            Legacy ("corpus"): one length per field for the whole corpus, the
            longest text (+ 1 for decoder inputs and targets, not + the affix),
            never truncating, mask `ids != pad`: a batch holding a decoder text
            within two tokens of the longest is ragged and raises
            `RaggedBatchError`, where the original's batch could not become a
            tensor. "corpus_fit": one length per field for the whole corpus,
            the longest sequence, so nothing is ragged (the legacy's fixed
            shapes, trainable).
        truncate: cut every sequence to `max_length`. Legacy (False): never
            truncated; a sequence longer than `max_length` is an error up front.
        batching: "cycled": an epoch is the largest corpus, example i takes
            row i % size of each corpus, examples shuffled by a torch generator,
            last partial batch kept. Legacy ("all_text_epoch"): the epoch is
            set by all_text (len // batch_size batches, last partial batch
            dropped); each corpus is shuffled in place by its own
            `numpy.random.default_rng([seed, k])` at every pass, the others
            repeated pass after pass to all_text's length.
        batch_size: examples per batch; None: the trainer's `--batch-size`.
            Legacy: 32, a constant of the original.
        all_text: "file": all_text.csv as it is. Legacy ("composed"): composed
            as the original's data preparation did, the answers, `proposition0`
            twice (Premise 1; Premise 2 never), the conclusions, `statement0`
            and `statement1`, in that order.
    """

    encoder_special_tokens: bool = True
    decoder_affixes: str = "single"
    padding: str = "batch"
    truncate: bool = True
    batching: str = "cycled"
    batch_size: int | None = None
    all_text: str = "file"

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"data option {name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"data option batch_size must be at least 1 or None, got {self.batch_size}")

    def legacy(self) -> DataConfig:
        """This config with every data option as the legacy pipeline had it."""
        return dataclasses.replace(self, **LEGACY_DATA_VALUES)

    @property
    def is_default(self) -> bool:
        return self == DataConfig()

    def with_assignments(self, assignments: Sequence[str]) -> DataConfig:
        """This config with `NAME=VALUE` overrides (the command line's `--data-option`).

        Raises:
            ValueError: an unknown option or a value of the wrong kind.
        """
        changes: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(self)}
        for assignment in assignments:
            name, sep, value = assignment.partition("=")
            if not sep or name not in fields:
                raise ValueError(f"--data-option expects NAME=VALUE with NAME one of {sorted(fields)}, "
                                 f"got {assignment!r}")
            if name in ("encoder_special_tokens", "truncate"):
                if value.lower() not in ("true", "false"):
                    raise ValueError(f"data option {name} is true or false, got {value!r}")
                changes[name] = value.lower() == "true"
            elif name == "batch_size":
                changes[name] = None if value.lower() == "none" else int(value)
            else:
                changes[name] = value
        return dataclasses.replace(self, **changes)


def data_config_for(preset: str, assignments: Sequence[str] = ()) -> DataConfig:
    """`DataConfig()` ("default") or `DataConfig().legacy()` ("legacy"), then the overrides."""
    if preset not in ("default", "legacy"):
        raise ValueError(f"data preset must be 'default' or 'legacy', got {preset!r}")
    base = DataConfig() if preset == "default" else DataConfig().legacy()
    return base.with_assignments(assignments)


def compose_all_text(corpora: Corpora) -> list[str]:
    """all_text as the original's data preparation composed it from the other corpora (docs/legacy.md §1.4)."""
    answers = [answer for _, answer in corpora.question_answering]
    premises = [proposition0 for proposition0, _, _ in corpora.reasoning]
    conclusions = [conclusion for _, _, conclusion in corpora.reasoning]
    statements0 = [statement0 for statement0, _, _ in corpora.consistency]
    statements1 = [statement1 for _, statement1, _ in corpora.consistency]
    return answers + premises + premises + conclusions + statements0 + statements1


@dataclass(frozen=True)
class RaggedBatch:
    """Where a corpus-padded batch cannot be rectangular."""

    batch: int
    field: str
    padded_length: int
    row_lengths: tuple[int, ...]

    def explain(self) -> str:
        longer = sorted({n for n in self.row_lengths if n != self.padded_length})
        return (f"batch {self.batch}, field {self.field!r}: padded to {self.padded_length} for the corpus, "
                f"but rows of {longer} tokens are longer and padding never truncates")


class RaggedBatchError(ValueError):
    """A batch of the legacy padding is ragged (the original's batch could not become a tensor)."""

    def __init__(self, ragged: RaggedBatch):
        super().__init__(ragged.explain())
        self.ragged = ragged


class CorpusBatches:
    """Batches of the four corpora built as `DataConfig` says; the port's path for non-default data options.

    Everything is tokenised once. `batches(epoch)` yields `QaracBatch`es:
    inputs (B, T_field) int64 ids and masks, token targets (B, T_field) with
    their mask, consistency (B,) float32.

    Args:
        corpora: the four corpora.
        tokenizer: a RoBERTa tokenizer (fast, with its post-processor).
        data_config: the data options.
        max_length: longest sequence (the model's positions).
        batch_size: used when `data_config.batch_size` is None.
        seed: the data order.

    Raises:
        ValueError: a corpus is empty, (truncate off) a sequence is longer than
            max_length, or all_text holds less than one batch (legacy batching).
    """

    def __init__(self, corpora: Corpora, tokenizer, data_config: DataConfig = DataConfig(),
                 max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 16, seed: int = 0):
        empty = [name for name, size in corpora.sizes().items() if size == 0]
        if empty:
            raise ValueError(f"corpora {empty} are empty; every objective needs rows")
        _check_max_length(max_length)
        self.config = data_config
        self.pad_id = tokenizer.pad_token_id
        self.batch_size = data_config.batch_size or batch_size
        self.seed = seed
        all_text = compose_all_text(corpora) if data_config.all_text == "composed" else list(corpora.all_text)
        question, answer = map(list, zip(*corpora.question_answering))
        proposition0, proposition1, conclusion = map(list, zip(*corpora.reasoning))
        statement0, statement1, _ = map(list, zip(*corpora.consistency))
        self.sizes = {"all_text": len(all_text), **{name: size for name, size in corpora.sizes().items()
                                                     if name != "all_text"}}
        texts = {"all_text": all_text, "question": question, "answer": answer, "proposition0": proposition0,
                 "proposition1": proposition1, "statement0": statement0, "statement1": statement1}
        self.columns: dict[str, TokenColumn] = {}
        self.lengths: dict[str, int] = {}
        for field, column_texts in texts.items():
            self._add(field, self._encode(tokenizer, column_texts, max_length, data_config.encoder_special_tokens))
        prefix, suffix = self._affixes(tokenizer)
        for source, column_texts in (("all_text", all_text), ("conclusion", conclusion)):
            offset, target = DECODER_FIELDS[source]
            bodies = self._encode(tokenizer, column_texts, max_length - len(prefix), False)
            longest_body = max(map(len, bodies))
            self._add(offset, [prefix + body for body in bodies], longest_body + 1)
            self._add(target, [body + suffix for body in bodies], longest_body + 1)
        self._check_lengths(max_length)
        if data_config.batching == "all_text_epoch" and self.sizes["all_text"] < self.batch_size:
            raise ValueError(f"all_text has {self.sizes['all_text']} rows, fewer than one batch of "
                             f"{self.batch_size}: an epoch of batching=all_text_epoch would be empty")
        self.labels = torch.tensor([label for *_, label in corpora.consistency], dtype=torch.float32)

    def _encode(self, tokenizer, texts: Sequence[str], max_length: int, special: bool) -> list[list[int]]:
        truncate = self.config.truncate
        return tokenizer(list(texts), add_special_tokens=special, truncation=truncate,
                         max_length=max_length if truncate else None)["input_ids"]

    def _affixes(self, tokenizer) -> tuple[list[int], list[int]]:
        if self.config.decoder_affixes == "single":
            return [tokenizer.bos_token_id], [tokenizer.eos_token_id]
        # The post-processor wraps the special token itself: <s> <s> </s> and <s> </s> </s>.
        return (tokenizer(tokenizer.bos_token, add_special_tokens=True)["input_ids"],
                tokenizer(tokenizer.eos_token, add_special_tokens=True)["input_ids"])

    def _add(self, field: str, seqs: list[list[int]], legacy_length: int | None = None) -> None:
        self.columns[field] = TokenColumn(seqs)
        longest = max(map(len, seqs))
        corpus_fit = self.config.padding == "corpus_fit"
        self.lengths[field] = longest if corpus_fit or legacy_length is None else legacy_length

    def _check_lengths(self, max_length: int) -> None:
        for field, column in self.columns.items():
            lengths = np.diff(column.offsets)
            if lengths.max() > max_length:
                row = int(np.argmax(lengths))
                raise ValueError(f"field {field!r}, row {row}: {int(lengths[row])} tokens, more than max_length "
                                 f"{max_length}, and truncate is off; shorten the text or raise max_length")

    # --- order -----------------------------------------------------------------------
    def plan(self, epoch: int = 0) -> list[dict[str, list[int]]]:
        """Epoch `epoch`'s batches as corpus -> row indices (B each)."""
        if self.config.batching == "cycled":
            return self._cycled_plan(epoch)
        return self._legacy_plans(epoch)[epoch]

    def _cycled_plan(self, epoch: int) -> list[dict[str, list[int]]]:
        length = max(self.sizes.values())
        # One generator per (seed, epoch): an epoch's order never depends on the ones before,
        # so a resumed run finds it again without replaying them.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(length, generator=generator).tolist()
        return [{corpus: [i % size for i in order[start:start + self.batch_size]]
                 for corpus, size in self.sizes.items()}
                for start in range(0, length, self.batch_size)]

    def _legacy_plans(self, last_epoch: int) -> list[list[dict[str, list[int]]]]:
        # The legacy loaders shuffle their row lists in place at every pass, so an
        # epoch's order depends on every pass before it: replay them from epoch 0.
        rngs = {corpus: np.random.default_rng([self.seed, index]) for index, corpus in enumerate(CORPUS_ORDER)}
        orders = {corpus: list(range(self.sizes[corpus])) for corpus in CORPUS_ORDER}
        n_samples = self.sizes["all_text"]
        plans = []
        for _ in range(last_epoch + 1):
            rows = {}
            for corpus in CORPUS_ORDER:
                passes = 1 if corpus == "all_text" else -(-n_samples // self.sizes[corpus])
                drawn = []
                for _ in range(passes):
                    rngs[corpus].shuffle(orders[corpus])
                    drawn += orders[corpus]
                rows[corpus] = drawn[:n_samples]
            plans.append([{corpus: rows[corpus][start:start + self.batch_size] for corpus in CORPUS_ORDER}
                          for start in range(0, n_samples // self.batch_size * self.batch_size, self.batch_size)])
        return plans

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.plan(0))

    # --- batches ---------------------------------------------------------------------
    def build(self, rows: Mapping[str, Sequence[int]], index: int = 0) -> QaracBatch:
        """The batch of the given corpus rows.

        Raises:
            RaggedBatchError: legacy padding, and a field whose rows do not fit its corpus length.
        """
        def tokens(field: str) -> TokenBatch:
            seqs = [self.columns[field][row] for row in rows[FIELD_CORPUS[field]]]
            if self.config.padding == "batch":
                return pad_sequences(seqs, self.pad_id)
            return self._pad_to_corpus(seqs, field, index)

        inputs = {name: tokens(name) for name in INPUT_NAMES}
        targets: dict[str, Any] = {name: tokens(name) for name in TARGET_NAMES if name != "consistency"}
        targets["consistency"] = self.labels[list(rows["consistency"])]  # (B,)
        return QaracBatch(inputs, targets)

    def _pad_to_corpus(self, seqs: list[torch.Tensor], field: str, index: int) -> TokenBatch:
        length = self.lengths[field]
        row_lengths = tuple(max(len(seq), length) for seq in seqs)
        if len(set(row_lengths)) > 1:
            raise RaggedBatchError(RaggedBatch(index, field, length, row_lengths))
        ids = torch.full((len(seqs), row_lengths[0]), self.pad_id, dtype=torch.long)  # (B, T)
        for row, seq in enumerate(seqs):
            ids[row, :len(seq)] = seq
        return TokenBatch(ids, (ids != self.pad_id).long())  # the legacy's mask: ids != pad

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[QaracBatch]:
        """Epoch `epoch`'s batches from batch number `start` on."""
        for index, rows in enumerate(self.plan(epoch)):
            if index >= start:
                yield self.build(rows, index)

    def find_ragged(self, epoch: int = 0) -> list[RaggedBatch]:
        """Every batch of `epoch` that `build` would refuse, found from the row lengths alone
        (no batch is built), so that a whole run can be checked before any training."""
        if self.config.padding != "corpus":
            return []  # per-batch and corpus_fit padding are never ragged
        fields = [*INPUT_NAMES, *(name for name in TARGET_NAMES if name != "consistency")]
        lengths = {field: np.diff(self.columns[field].offsets) for field in fields}
        found = []
        for index, rows in enumerate(self.plan(epoch)):
            for field in fields:
                padded = np.maximum(lengths[field][list(rows[FIELD_CORPUS[field]])], self.lengths[field])
                if padded.min() != padded.max():
                    found.append(RaggedBatch(index, field, self.lengths[field], tuple(int(n) for n in padded)))
                    break
        return found

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, tokenizer, data_config: DataConfig = DataConfig(),
                       **kwargs) -> CorpusBatches:
        """Load the four CSVs from `directory` and tokenise them."""
        return cls(Corpora.from_directory(directory), tokenizer, data_config, **kwargs)
