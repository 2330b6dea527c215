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
