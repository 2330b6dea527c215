"""Input checks shared by the QARAC modules.

Each check raises an error that names the argument, what was expected and what
came, so that a bad batch fails at the model's door instead of deep inside an
embedding lookup.

Three checks read tensor values (ids inside the vocabulary, masks of 0 and 1,
vectors finite): each copies a value to the host, a synchronisation on CUDA that stalls the
GPU. `skip_value_checks()` turns those two off for a hot training loop whose
batches come from `qarac.data` (already checked there); the shape and dtype
checks, which cost nothing, always run.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from qarac.config import QaracConfig

# Whether the checks that read tensor values (a host-device sync each) run; see skip_value_checks.
_value_checks_enabled = True


@contextlib.contextmanager
def skip_value_checks() -> Iterator[None]:
    """Inside this block the value checks (vocabulary range, 0/1 masks, finite vectors) are skipped.

    Use it around a training loop on an accelerator: the checks force a
    host-device sync per call. Shape and dtype checks still run.
    """
    global _value_checks_enabled
    previous, _value_checks_enabled = _value_checks_enabled, False
    try:
        yield
    finally:
        _value_checks_enabled = previous


def value_checks_enabled() -> bool:
    """False inside `skip_value_checks()`."""
    return _value_checks_enabled


def check_token_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config: QaracConfig,
                    name: str = "input_ids") -> None:
    """Validate a (B, T) batch of token ids and its optional (B, T) mask.

    Raises:
        TypeError: ids are not an integer tensor.
        ValueError: wrong rank, empty batch, ids outside the vocabulary, more
            tokens than the position table allows, or a mask whose shape differs
            or that holds values other than 0 and 1.
    """
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {input_ids.dtype}")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, tokens), got shape {tuple(input_ids.shape)}")
    batch, tokens = input_ids.shape
    if batch == 0 or tokens == 0:
        raise ValueError(f"{name} is empty: shape {tuple(input_ids.shape)}; need at least one sequence of one token")
    if tokens > config.max_tokens:
        raise ValueError(f"{name} has {tokens} tokens but the position table allows at most {config.max_tokens} "
                         f"(max_position_embeddings - pad_token_id - 1); truncate the input")
    if _value_checks_enabled:
        _check_vocabulary(input_ids, config.vocab_size, name)
    if attention_mask is not None:
        _check_mask(attention_mask, input_ids.shape, name)


def _check_vocabulary(input_ids: torch.Tensor, vocab_size: int, name: str) -> None:
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = (input_ids < 0) | (input_ids >= vocab_size)
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} holds id {int(input_ids[where])} at (batch, token) {where}, outside the "
                         f"vocabulary of {vocab_size} ids [0, {vocab_size - 1}]; was it tokenised for another model?")


def _check_mask(attention_mask: torch.Tensor, ids_shape: torch.Size, name: str) -> None:
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask for {name} must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.shape != ids_shape:
        raise ValueError(f"attention_mask for {name} has shape {tuple(attention_mask.shape)} but the ids have "
                         f"shape {tuple(ids_shape)}; they must match")
    if _value_checks_enabled and attention_mask.dtype != torch.bool:
        _check_mask_values(attention_mask, name)


def _check_mask_values(attention_mask: torch.Tensor, name: str) -> None:
    # A 0.5 or a 2 would scale a token's weight in the pooling head and shift the additive
    # attention bias: a different output, not an error, so it must be refused here.
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"attention_mask for {name} holds {attention_mask[where].item()} at (batch, token) {where}; "
                         "expected 0 (padding) or 1 (token) only")


def check_vectors(vector: torch.Tensor, config: QaracConfig, batch_size: int | None = None,
                  name: str = "vector") -> None:
    """Validate a (B, H) batch of encoder vectors handed to the decoder.

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong shape, batch size differing from the seed tokens', or NaN/inf values.
    """
    if not isinstance(vector, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(vector).__name__}")
    if not vector.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {vector.dtype}")
    if vector.dim() != 2 or vector.shape[1] != config.hidden_size:
        raise ValueError(f"{name} must have shape (batch, {config.hidden_size}), got {tuple(vector.shape)}")
    if vector.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: shape {tuple(vector.shape)}")
    if batch_size is not None and vector.shape[0] != batch_size:
        raise ValueError(f"{name} has batch size {vector.shape[0]} but the seed tokens have batch size "
                         f"{batch_size}; give one vector per sequence")
    if not _value_checks_enabled:
        return
    finite = torch.isfinite(vector)
    if not bool(finite.all()):
        where = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(f"{name} holds a non-finite value {float(vector[where])} at {where}; cannot decode NaN/inf")
