"""Strict checking of a RoBERTa base's weights file, before any model is built.

`transformers` (PyTorch and TF) fills a tensor missing from `model.safetensors`
with random values and only logs a warning; the parity harness would then copy
that random tensor from the legacy side to the port and report PASSED, and
`qarac train` would train on it. Both sides call `check_base_weights` first: it
reads the file's header only (names, shapes, metadata; no tensor data) and
compares it with the tensors a `RobertaModel` of the directory's config holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import safetensors
import torch

from qarac import _hf  # noqa: F401
from qarac.errors import CheckpointError
from transformers import RobertaConfig, RobertaModel

# Checkpoints of RoBERTa task models (e.g. RobertaForMaskedLM, roberta-base's own file) hold
# the base under this prefix; transformers strips it when loading a bare RobertaModel.
BASE_PREFIX = RobertaModel.base_model_prefix + "."
# The masked-LM head of such a checkpoint: not part of the base, deliberately not loaded.
FOREIGN_HEAD_PREFIXES = ("lm_head.",)
POOLER_PREFIX = "pooler."
# How many names each kind of problem lists before "and N more" (the line stays readable).
MAX_NAMES = 12


class BaseWeightsError(CheckpointError):
    """A base weights file that does not hold exactly the base's tensors."""


def expected_shapes(config: RobertaConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every persistent tensor of a `RobertaModel` (pooler included).

    Built on the meta device: no memory, no initialisation.
    """
    with torch.device("meta"):
        model = RobertaModel(config, add_pooling_layer=True)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def file_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str] | None]:
    """(name -> shape, metadata) from a safetensors header; task-model prefixes stripped.

    Raises:
        BaseWeightsError: the file is not readable safetensors.
    """
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise BaseWeightsError(f"{path} is not a readable safetensors file (corrupt or truncated?): "
                               f"{error}") from error
    if any(name.startswith(BASE_PREFIX) for name in shapes):
        shapes = {name.removeprefix(BASE_PREFIX): shape for name, shape in shapes.items()}
    return shapes, metadata


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown if len(names) <= MAX_NAMES else f"{shown} and {len(names) - MAX_NAMES} more"


def check_base_weights(directory: str | os.PathLike, config: RobertaConfig, pooler: bool = True) -> None:
    """Refuse a `model.safetensors` that is not exactly a RoBERTa base of `config`.

    Args:
        directory: the HF model directory holding `model.safetensors`.
        config: its RoBERTa config (the architecture the file must match).
        pooler: the pooler is built, so its tensors are required; when False
            they are optional (present ones are not loaded).

    Raises:
        BaseWeightsError: no `format` metadata, or missing, unexpected or
            wrong-shaped tensors; one line naming each.
    """
    path = Path(directory) / "model.safetensors"
    found, metadata = file_shapes(path)
    if not metadata or "format" not in metadata:
        raise BaseWeightsError(f"{path} has no 'format' metadata, so transformers will not load it; re-save it "
                               "with save_pretrained or safetensors.torch.save_file(..., metadata={'format': 'pt'})")
    expected = expected_shapes(config)
    optional = set() if pooler else {name for name in expected if name.startswith(POOLER_PREFIX)}
    missing = sorted(name for name in expected if name not in found and name not in optional)
    unexpected = sorted(name for name in found
                        if name not in expected and not name.startswith(FOREIGN_HEAD_PREFIXES))
    misshapen = sorted(f"{name} {found[name]} (expected {expected[name]})"
                       for name in expected if name in found and found[name] != expected[name])
    problems = [f"{label}: {_names(names)}" for label, names in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)) if names]
    if problems:
        raise BaseWeightsError(f"{path} does not match its config.json (hidden {config.hidden_size}, "
                               f"{config.num_hidden_layers} layers); {'; '.join(problems)}")
