"""Base-model presets and the embedded tiny RoBERTa.

The embedded default is a RoBERTa small enough for tests and for a parity run
in seconds, built deterministically from a seed and written as an ordinary HF
checkpoint directory (config.json + model.safetensors + tokenizer files), so
every code path that takes "any local RoBERTa directory" is exercised by it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from qarac import _hf  # noqa: F401
from qarac.checkpoint import no_progress_bar
from transformers import RobertaConfig, RobertaModel

_SPECIAL_IDS = dict(bos_token_id=0, pad_token_id=1, eos_token_id=2)

# Deliberately odd intermediate size (37) so that a transposed weight cannot hide.
TINY: Mapping[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 130,  # 128 tokens + RoBERTa's padding_idx + 1 offset
    "type_vocab_size": 1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    **_SPECIAL_IDS,
}

# roberta-base's shapes, for benchmarks with random weights.
ROBERTA_BASE: Mapping[str, Any] = {
    **TINY,
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
}

PRESETS: Mapping[str, Mapping[str, Any]] = {"tiny": TINY, "roberta-base": ROBERTA_BASE}

TINY_SEED = 0
# v2: weights drawn by `seeded_weights`, the same on every transformers line.
_CACHE_VERSION = "v2"


def _cache_root() -> Path:
    return Path(os.environ.get("QARAC_HOME", Path.home() / ".cache" / "qarac"))


def roberta_config(preset: str = "tiny", **overrides: Any) -> RobertaConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return RobertaConfig(**{**PRESETS[preset], **overrides})


def build_base_checkpoint(directory: str | os.PathLike, preset: str = "tiny", seed: int = TINY_SEED,
                          **overrides: Any) -> Path:
    """Write a randomly initialised RoBERTa, seeded, as an HF checkpoint directory.

    The same (preset, seed, overrides) always gives byte-identical weights. The
    directory is assembled beside its destination and renamed into place, so a
    crash never leaves a half-written checkpoint.

    Returns:
        The checkpoint directory.
    """
    directory = Path(directory)
    config = roberta_config(preset, **overrides)
    model = RobertaModel(config, add_pooling_layer=True)
    seeded_weights(model, seed)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with no_progress_bar():
            model.save_pretrained(staging, safe_serialization=True)
        _save_tokenizer_if_compatible(staging, config.vocab_size)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


@torch.no_grad()
def seeded_weights(model: RobertaModel, seed: int) -> RobertaModel:
    """Overwrite every parameter with values drawn from `seed` alone, as HF's RoBERTa init
    draws them (normal(0, initializer_range) matrices and embeddings, zero biases, unit
    layer-norm scales, zero `<pad>` embedding rows).

    HF's own init draws in an order that changed between transformers 4.57 and 5, so
    seeding the global RNG around it gave each line its own "embedded" model; here
    parameters are drawn by name, in sorted order, from one private generator.
    """
    generator = torch.Generator().manual_seed(seed)
    std = model.config.initializer_range
    pad = model.config.pad_token_id
    for name, parameter in sorted(model.named_parameters()):
        if name.endswith("LayerNorm.weight"):
            parameter.fill_(1.0)
        elif name.endswith("bias"):
            parameter.zero_()
        else:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    model.embeddings.word_embeddings.weight[pad] = 0.0
    model.embeddings.position_embeddings.weight[pad] = 0.0
    return model


def _save_tokenizer_if_compatible(directory: Path, vocab_size: int) -> None:
    """Ship the embedded tokenizer with the tiny model when its ids fit the vocabulary."""
    from qarac.tokenizer import load_default_tokenizer

    tokenizer = load_default_tokenizer()
    if len(tokenizer) <= vocab_size:
        tokenizer.save_pretrained(directory)


def _tokenizer_fingerprint() -> str:
    """Short hash of the shipped tokenizer, so a changed tokenizer never meets a stale cached model."""
    from qarac.tokenizer import DEFAULT_TOKENIZER_DIR

    return hashlib.sha256((Path(DEFAULT_TOKENIZER_DIR) / "tokenizer.json").read_bytes()).hexdigest()[:10]


def tiny_model_dir(seed: int = TINY_SEED) -> Path:
    """The embedded tiny RoBERTa, built on first use into the cache
    (`$QARAC_HOME`, default `~/.cache/qarac`)."""
    directory = _cache_root() / f"tiny-roberta-seed{seed}-{_CACHE_VERSION}-{_tokenizer_fingerprint()}"
    if not (directory / "model.safetensors").is_file() or not (directory / "config.json").is_file():
        build_base_checkpoint(directory, "tiny", seed)
    return directory
