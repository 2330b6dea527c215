"""The random number generators' states, saved in a checkpoint so that a resumed run draws what
the uninterrupted one would have drawn (dropout masks)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from qarac.training.runtime import Runtime


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of the torch (CPU and CUDA), python `random` and numpy RNG states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    scalars = {"python": [version, list(internal), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, scalars


def restore_rng(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = scalars["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def gather_rng(runtime: Runtime) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Every rank's RNG states, in rank order (each rank draws its own dropout masks)."""
    mine = capture_rng()
    if not runtime.distributed:
        return [mine]
    gathered: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(gathered, mine)  # in-memory exchange only; files never hold pickles
    return gathered
