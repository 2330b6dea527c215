"""Which corpus rows each batch of an epoch takes: the batching orders of the data options.

A plan is a list of batches, each a dict corpus -> B row indices.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from torch.utils.data import DistributedSampler

Plan = list[dict[str, list[int]]]
# Corpus -> its index in the legacy loaders' seeding, numpy.random.default_rng([seed, index]).
CORPUS_ORDER = ("all_text", "question_answering", "reasoning", "consistency")


def example_rows(sizes: Mapping[str, int], examples: Iterable[int]) -> dict[str, list[int]]:
    """The rows of cycled examples: example i takes row i % size of each corpus."""
    examples = list(examples)
    return {corpus: [i % size for i in examples] for corpus, size in sizes.items()}


def cycled_plan(sizes: Mapping[str, int], batch_size: int, seed: int, epoch: int, rank: int = 0,
                world_size: int = 1) -> Plan:
    """`batching=cycled`: this process's batches of `epoch`.

    The epoch is the largest corpus's length in examples, ordered as torch's `DistributedSampler`
    orders them (shuffled by seed + epoch; with several processes padded to a multiple of
    `world_size` and dealt out in turn), cut into batches of `batch_size`, the last one kept
    short. An epoch's order depends on (seed, epoch) only, so a resumed run finds it again
    without replaying the epochs before it.
    """
    sampler = DistributedSampler(range(max(sizes.values())), num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [example_rows(sizes, order[start:start + batch_size]) for start in range(0, len(order), batch_size)]


def legacy_plans(sizes: Mapping[str, int], batch_size: int, seed: int, last_epoch: int) -> list[Plan]:
    """`batching=all_text_epoch`: the legacy loaders' batches of epochs 0 to `last_epoch`.

    all_text sets the epoch (len // batch_size batches, the last partial batch dropped); each
    corpus is shuffled in place by its own `numpy.random.default_rng([seed, k])` at every pass,
    the others repeated pass after pass to all_text's length.
    """
    # The legacy loaders shuffle their row lists in place at every pass, so an
    # epoch's order depends on every pass before it: replay them from epoch 0.
    rngs = {corpus: np.random.default_rng([seed, index]) for index, corpus in enumerate(CORPUS_ORDER)}
    orders = {corpus: list(range(sizes[corpus])) for corpus in CORPUS_ORDER}
    n_samples = sizes["all_text"]
    plans = []
    for _ in range(last_epoch + 1):
        rows = {}
        for corpus in CORPUS_ORDER:
            passes = 1 if corpus == "all_text" else -(-n_samples // sizes[corpus])
            drawn = []
            for _ in range(passes):
                rngs[corpus].shuffle(orders[corpus])
                drawn += orders[corpus]
            rows[corpus] = drawn[:n_samples]
        plans.append([{corpus: rows[corpus][start:start + batch_size] for corpus in CORPUS_ORDER}
                      for start in range(0, n_samples // batch_size * batch_size, batch_size)])
    return plans
