"""The batching pipeline: the four corpora, tokenised once, made into `QaracBatch`es as the data
options say (`DataConfig`), one epoch at a time, for one process or each of several.

Every option set goes through it: the default options give the corrected pipeline, ordered
and split among processes as torch's `DistributedSampler` does; `DataConfig().legacy()` gives
the legacy's batches exactly (docs/legacy.md §1.5). `loader` hands an epoch to a `DataLoader`
(worker processes, pinned memory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from qarac.batch import INPUT_NAMES, TARGET_NAMES, QaracBatch, TokenBatch, pad_sequences
from qarac.data.corpora import Corpora, compose_all_text
from qarac.data.options import DataConfig
from qarac.data.order import Plan, cycled_plan, example_rows, legacy_plans
from qarac.data.tokens import (DECODER_FIELDS, FIELD_CORPUS, TokenColumn, check_max_length, decoder_affixes,
                               encode)

# The tiny preset's 128 positions.
DEFAULT_MAX_LENGTH = 128
# The token fields of a batch: the inputs and the two token targets.
TOKEN_FIELDS = (*INPUT_NAMES, *(name for name in TARGET_NAMES if name != "consistency"))


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
    """Batches of the four corpora built as `DataConfig` says.

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
        ValueError: a corpus is empty, max_length < 3, (truncate off) a sequence is longer
            than max_length, or all_text holds less than one batch (legacy batching).
    """

    def __init__(self, corpora: Corpora, tokenizer, data_config: DataConfig = DataConfig(),
                 max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 16, seed: int = 0):
        empty = [name for name, size in corpora.sizes().items() if size == 0]
        if empty:
            raise ValueError(f"corpora {empty} are empty; every objective needs rows")
        check_max_length(max_length)
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
        prefix, suffix = decoder_affixes(tokenizer, data_config.decoder_affixes)
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
        return encode(tokenizer, texts, max_length, special, self.config.truncate)

    def _add(self, field: str, seqs: list[list[int]], legacy_length: int | None = None) -> None:
        self.columns[field] = TokenColumn(seqs)
        longest = max(map(len, seqs))
        corpus_fit = self.config.padding == "corpus_fit"
        self.lengths[field] = longest if corpus_fit or legacy_length is None else legacy_length

    def _check_lengths(self, max_length: int) -> None:
        for field, column in self.columns.items():
            lengths = column.lengths()
            if lengths.max() > max_length:
                row = int(np.argmax(lengths))
                raise ValueError(f"field {field!r}, row {row}: {int(lengths[row])} tokens, more than max_length "
                                 f"{max_length}, and truncate is off; shorten the text or raise max_length")

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, tokenizer, data_config: DataConfig = DataConfig(),
                       **kwargs) -> CorpusBatches:
        """Load the four CSVs from `directory` and tokenise them."""
        return cls(Corpora.from_directory(directory), tokenizer, data_config, **kwargs)

    # --- order -----------------------------------------------------------------------
    def plan(self, epoch: int = 0, rank: int = 0, world_size: int = 1) -> Plan:
        """Epoch `epoch`'s batches for process `rank` of `world_size`, as corpus -> row indices (B each).

        Raises:
            ValueError: several processes with `batching=all_text_epoch` (the legacy's one-process order).
        """
        if self.config.batching == "cycled":
            return cycled_plan(self.sizes, self.batch_size, self.seed, epoch, rank, world_size)
        if world_size > 1:
            raise ValueError("batching=all_text_epoch (the legacy's order) trains in one process; run without "
                             "torchrun, or with --data-option batching=cycled")
        return legacy_plans(self.sizes, self.batch_size, self.seed, epoch)[epoch]

    def __len__(self) -> int:
        """Batches per epoch (one process)."""
        return len(self.plan(0))

    @property
    def example_count(self) -> int:
        """Examples of a cycled epoch: the largest corpus's rows."""
        return max(self.sizes.values())

    # --- batches ---------------------------------------------------------------------
    def build(self, rows: Mapping[str, Sequence[int]], index: int = 0) -> QaracBatch:
        """The batch of the given corpus rows (batch number `index` of its epoch, for the error).

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

    def examples(self, indices: Iterable[int]) -> QaracBatch:
        """The batch of cycled examples `indices` (example i takes row i % size of each corpus).

        Raises:
            IndexError: an index outside [0, example_count).
        """
        indices = list(indices)
        outside = [index for index in indices if not 0 <= index < self.example_count]
        if outside:
            raise IndexError(f"examples {outside} out of range for {self.example_count} examples")
        return self.build(example_rows(self.sizes, indices))

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[QaracBatch]:
        """Epoch `epoch`'s batches (one process) from batch number `start` on."""
        epoch_batches = EpochBatches(self, epoch, start)
        return map(epoch_batches.__getitem__, range(len(epoch_batches)))

    def loader(self, epoch: int = 0, start: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
               pin_memory: bool = False) -> DataLoader:
        """A `DataLoader` of process `rank`'s batches of `epoch` from batch number `start` on."""
        # The loader's own generator: starting an iterator draws a seed from it, which would
        # otherwise come from the global RNG and shift every dropout mask after it.
        return DataLoader(EpochBatches(self, epoch, start, rank, world_size), batch_size=None, shuffle=False,
                          collate_fn=_as_built, num_workers=num_workers, pin_memory=pin_memory,
                          generator=torch.Generator().manual_seed(self.seed))

    def find_ragged(self, epoch: int = 0) -> list[RaggedBatch]:
        """Every batch of `epoch` that `build` would refuse, found from the row lengths alone
        (no batch is built), so that a whole run can be checked before any training."""
        if self.config.padding != "corpus":
            return []  # per-batch and corpus_fit padding are never ragged
        lengths = {field: self.columns[field].lengths() for field in TOKEN_FIELDS}
        found = []
        for index, rows in enumerate(self.plan(epoch)):
            for field in TOKEN_FIELDS:
                padded = np.maximum(lengths[field][list(rows[FIELD_CORPUS[field]])], self.lengths[field])
                if padded.min() != padded.max():
                    found.append(RaggedBatch(index, field, self.lengths[field], tuple(int(n) for n in padded)))
                    break
        return found


class EpochBatches(Dataset):
    """One process's batches of one epoch from batch number `start` on; item i is batch `start + i`."""

    def __init__(self, data: CorpusBatches, epoch: int, start: int = 0, rank: int = 0, world_size: int = 1):
        self.data = data
        self.start = start
        self.plan = data.plan(epoch, rank, world_size)[start:]

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> QaracBatch:
        return self.data.build(self.plan[index], self.start + index)


def _as_built(batch: QaracBatch) -> QaracBatch:
    """The DataLoader's collate function: each item is a whole batch already."""
    return batch
