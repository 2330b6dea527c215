"""Builders shared by the PyTorch-side tests (tiny, deliberately odd sizes).

A module of its own, not conftest.py: tests/legacy has a conftest too, and two
modules both importable as `conftest` shadow each other in one pytest run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qarac import INPUT_NAMES, QaracConfig
from qarac.presets import TINY

VOCAB = 99  # transformers' testers' odd vocabulary size


@dataclass
class Tokens:
    """Minimal stand-in for qarac.batch.TokenBatch: (B, T) ids and mask."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def tiny_config(**options) -> QaracConfig:
    """hidden 32, 2 layers, 4 heads, intermediate 37, vocab 99; dropout kept (tests use eval())."""
    return QaracConfig(base={**TINY, "vocab_size": VOCAB}, **options)


def random_tokens(batch: int, length: int, lengths: list[int] | None = None, seed: int = 0,
                  vocab: int = VOCAB) -> Tokens:
    """`<s>`-started ids (B, T), right-padded with `<pad>` (id 1) past each row's length."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    ids[:, 0] = 0
    lengths = lengths or [length] * batch
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 1)
    return Tokens(ids, mask)


def append_padding(tokens: Tokens, extra: int) -> Tokens:
    batch = tokens.input_ids.shape[0]
    ids = torch.cat([tokens.input_ids, torch.ones(batch, extra, dtype=torch.long)], dim=1)
    mask = torch.cat([tokens.attention_mask, torch.zeros(batch, extra, dtype=torch.long)], dim=1)
    return Tokens(ids, mask)


def trainer_batch(batch: int = 3, length: int = 7, padded: bool = True, seed: int = 0):
    """(inputs, targets) for QaracTrainerModel/QaracLoss; rows shorter than `length` when padded."""
    lengths = [length - (i % 3) for i in range(batch)] if padded else None
    inputs = {name: random_tokens(batch, length, lengths, seed + i) for i, name in enumerate(INPUT_NAMES)}
    targets = {
        "encode_decode": random_tokens(batch, length, lengths, seed + 100),
        "reasoning": random_tokens(batch, length, lengths, seed + 101),
        "consistency": torch.tensor([1.0, 0.0, -1.0] * batch)[:batch],
    }
    return inputs, targets
