"""Copies of the tiny RoBERTa directory with one planted fault in `model.safetensors`."""

from __future__ import annotations

import shutil
from pathlib import Path

import safetensors.torch
import torch

DROPPED = "encoder.layer.1.attention.self.query.weight"
RESHAPED = "encoder.layer.0.output.dense.bias"
EXTRA = "encoder.layer.7.output.dense.bias"


def faulty_model_dir(source: Path, target: Path, fault: str) -> Path:
    """`source` copied to `target` with `fault`: "missing" (DROPPED removed), "unexpected"
    (EXTRA added), "shape" (RESHAPED one element longer) or "no_format" (no metadata)."""
    shutil.copytree(source, target)
    tensors = safetensors.torch.load_file(target / "model.safetensors")
    metadata = {"format": "pt"}
    if fault == "missing":
        del tensors[DROPPED]
    elif fault == "unexpected":
        tensors[EXTRA] = torch.zeros(3)
    elif fault == "shape":
        tensors[RESHAPED] = torch.cat([tensors[RESHAPED], torch.zeros(1)])
    elif fault == "no_format":
        metadata = None
    else:
        raise ValueError(f"unknown fault {fault!r}")
    safetensors.torch.save_file(tensors, str(target / "model.safetensors"), metadata=metadata)
    return target


def moved_by_one_ulp(source: Path, target: Path, direction: int) -> Path:
    """`source` copied to `target` with every nonzero float weight moved one ulp up (`direction`
    1) or down (-1): a rounding-level change of the inputs, the size of the difference another
    CPU's kernels make to any one product. Zeros stay zero (padding rows, biases)."""
    shutil.copytree(source, target)
    tensors = safetensors.torch.load_file(target / "model.safetensors")
    towards = direction * float("inf")
    moved = {name: torch.where(tensor != 0, torch.nextafter(tensor, torch.full_like(tensor, towards)), tensor)
             for name, tensor in tensors.items()}
    safetensors.torch.save_file(moved, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target
