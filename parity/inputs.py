"""The batches the harness compares on: real sample sentences, tokenised, and
variants that stress RoBERTa's edge cases (no padding, maximum length, a row
made of padding only)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from qarac.batch import INPUT_NAMES, QaracBatch, TokenBatch
from qarac.config import QaracConfig
from qarac.data.batches import CorpusBatches
from qarac.data.corpora import DEFAULT_DATA_DIR
from qarac.tokenizer import check_tokenizer_fits, load_default_tokenizer, load_tokenizer

# Long enough for every sample sentence (the longest is 27 tokens), short enough to keep the run fast.
SAMPLE_MAX_LENGTH = 32


def tokenizer_for(model_dir: Path, config: QaracConfig):
    """The directory's own tokenizer, else the embedded one; it must fit the vocabulary."""
    has_tokenizer = (model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.json").is_file()
    tokenizer = load_tokenizer(model_dir) if has_tokenizer else load_default_tokenizer()
    check_tokenizer_fits(tokenizer, config.vocab_size)
    return tokenizer


def sample_batch(model_dir: Path, config: QaracConfig, batch_size: int, seed: int = 0) -> QaracBatch:
    """`batch_size` examples of the shipped sample corpora, padded per field as in training."""
    tokenizer = tokenizer_for(model_dir, config)
    data = CorpusBatches.from_directory(DEFAULT_DATA_DIR, tokenizer, max_length=SAMPLE_MAX_LENGTH)
    indices = np.random.default_rng(seed).choice(data.example_count, size=batch_size, replace=False)
    return data.examples(int(i) for i in indices)


def _truncate(tokens: TokenBatch, length: int) -> TokenBatch:
    return TokenBatch(tokens.input_ids[:, :length].contiguous(), torch.ones_like(tokens.input_ids[:, :length]))


def unpadded(batch: QaracBatch) -> QaracBatch:
    """Every field cut to its shortest row, so no row holds padding."""
    def cut(tokens: TokenBatch) -> TokenBatch:
        return _truncate(tokens, int(tokens.attention_mask.sum(dim=1).min()))

    return QaracBatch({name: cut(tokens) for name, tokens in batch.inputs.items()},
                      {name: cut(value) if isinstance(value, TokenBatch) else value
                       for name, value in batch.targets.items()})


def all_padding_row(batch: QaracBatch) -> QaracBatch:
    """The batch with one more row in every input that is `<pad>` only, mask all zeros."""
    def extend(tokens: TokenBatch) -> TokenBatch:
        pad_id = int(tokens.input_ids[tokens.attention_mask == 0][0]) if (tokens.attention_mask == 0).any() else 1
        row = torch.full_like(tokens.input_ids[:1], pad_id)
        return TokenBatch(torch.cat([tokens.input_ids, row]), torch.cat([tokens.attention_mask, torch.zeros_like(row)]))

    return dataclasses.replace(batch, inputs={name: extend(tokens) for name, tokens in batch.inputs.items()})


# The inputs run at the longest length: one per component, so that the shared encoder base,
# the question head, the answer head and the decoder each see the whole position table once.
# Running all nine at that length repeats the same code paths three times over and made this
# case most of the harness's forward time on roberta-base shapes (bench/README.md section 3).
# One row: the case is about the position table, not the batch (the padded batches cover rows);
# a second row doubled the case's cost, all of it in its long inputs.
MAX_LENGTH_INPUTS = ("question", "all_text", "offset_text")
# The other inputs of the max-length batch: short random sentences.
SHORT_LENGTH = 16


def max_length_batch(config: QaracConfig, seed: int = 0, batch_size: int = 1) -> dict[str, TokenBatch]:
    """Inputs (B, T) with `MAX_LENGTH_INPUTS` at the longest length the position table allows and
    the others at `SHORT_LENGTH` (ids drawn from the vocabulary, no padding)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for name in INPUT_NAMES:
        length = config.max_tokens if name in MAX_LENGTH_INPUTS else min(SHORT_LENGTH, config.max_tokens)
        ids = torch.randint(5, config.vocab_size, (batch_size, length), generator=generator)
        ids[:, 0] = config.bos_token_id
        inputs[name] = TokenBatch(ids, torch.ones_like(ids))
    return inputs
