"""Batch helpers shared by both runners: the permuted-rows variant and its inverse."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from parity.core.spec import Batch


def rows(batch: Batch) -> int:
    return int(next(iter(batch.inputs.values())).shape[0])


def permutation(batch: Batch, seed: int) -> list[int] | None:
    """A seeded row order that is never the identity; None for a batch of one row."""
    count = rows(batch)
    if count < 2:
        return None
    order = np.random.default_rng(seed).permutation(count)
    if (order == np.arange(count)).all():
        order = np.roll(order, 1)
    return [int(i) for i in order]


def permuted(inputs: Mapping[str, np.ndarray], order: list[int]) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(value[order]) for name, value in inputs.items()}


def unpermuted(values: Mapping[str, np.ndarray], order: list[int]) -> dict[str, np.ndarray]:
    """Values of a permuted batch put back in the original row order (every value has rows first)."""
    inverse = np.argsort(order)
    return {name: np.ascontiguousarray(value[inverse]) for name, value in values.items()}
