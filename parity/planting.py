"""Planting a bug for the duration of a block: a class- or module-level patch of the code the port runs,
or an edit of the recorded weights it loads; restored after. Used by the mutation suites
(`parity.mutations`, `parity.precision_mutants`)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    inherited = isinstance(owner, type) and name not in owner.__dict__  # e.g. torch.Tensor's C methods
    original = None if inherited else owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if inherited:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


@contextlib.contextmanager
def edited_weights(run: Any, edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Iterator[None]:
    """The recorded weights the port loads, edited (`edit` returns the new arrays by name); restored after."""
    originals = dict(run.weights)
    run.weights.update(edit(originals))
    try:
        yield
    finally:
        run.weights.clear()
        run.weights.update(originals)


def sdpa_replaced(replacement: Callable[..., torch.Tensor]) -> contextlib.AbstractContextManager:
    """`torch.nn.functional.scaled_dot_product_attention` (what transformers' "sdpa" attention calls,
    looked up at each call) replaced by `replacement(original, query, key, value, **kwargs)`."""
    original = torch.nn.functional.scaled_dot_product_attention

    def replaced(query, key, value, attn_mask=None, *args, **kwargs):
        return replacement(original, query, key, value, attn_mask, *args, **kwargs)

    return patched(torch.nn.functional, "scaled_dot_product_attention", replaced)
