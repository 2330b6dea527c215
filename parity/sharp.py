"""A sharper parity weight set, derived deterministically from the model under test.

Small random weights (RoBERTa's init std 0.02) keep every pre-activation
where GELU and its tanh approximation agree to 1e-7, the softmax nearly
uniform and the logits near zero: a port that used the wrong nonlinearity
would pass. This weight set rescales the same weights so that the
nonlinearities are exercised: every dense kernel to std `GAIN / sqrt(fan_in)`
(pre-activations of order 1 after a layer norm) and the embedding tables to
`EMBEDDING_GAIN / sqrt(H)` (the tied LM head's logits of order a few units).
Signs and structure are the model's own; only the scale changes.

A freshly initialised model also holds special values that hide bugs: every
bias 0 and every layer-norm gain 1, so a port that drops a bias or ignores a
layer norm's gain and bias computes the same numbers. Each 1-D parameter whose
elements are all equal (the initialiser's constant) gets a deterministic
spread around that constant: `SPREAD` standard deviations of a normal draw
seeded by the parameter's name (the same on every machine and on both sides:
the legacy receives the set through the weight bridge).

The set is versioned, and a bundle records the version its sharpened case used
(`VERSION_KEY` in its manifest; `check` applies the same one to the port):

- version 1: the dense kernels and embedding tables rescaled (the rule of
  commit c0c5927, with which the schema-1 bundles were recorded);
- version 2: version 1, and each constant 1-D parameter spread (the current set).
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, Iterator

import torch

GAIN = 1.5
EMBEDDING_GAIN = 3.0
SPREAD = 0.2
# Every version of the set, defined here once (module docstring), and the one `record` uses.
VERSIONS = {1: "dense kernels and embedding tables rescaled",
            2: "version 1, and each constant 1-D parameter spread around its constant"}
CURRENT_VERSION = 2
# The manifest field naming the version; a bundle without it used its schema's (`version_of_bundle`).
VERSION_KEY = "sharpened_set_version"
_VERSION_OF_SCHEMA = {1: 1, 2: 2}


def _spread(name: str, value: torch.Tensor) -> torch.Tensor | None:
    """A 1-D parameter left at one constant by the initialiser, moved off it; None for any other."""
    if value.dim() != 1 or value.numel() < 2 or bool((value != value.flatten()[0]).any()):
        return None
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    noise = torch.randn(value.shape, generator=generator, dtype=torch.float64)
    return (value.double() + SPREAD * noise).to(value.dtype)


def _sharpening(name: str, value: torch.Tensor) -> torch.Tensor | None:
    """The factor (a float32 scalar tensor) that rescales a 2-D parameter, or None to leave it."""
    if value.dim() != 2 or not value.std() > 0:
        return None
    embedding = "embeddings" in name and "LayerNorm" not in name
    return (EMBEDDING_GAIN if embedding else GAIN) / value.shape[1] ** 0.5 / value.std()


def checked_version(version: object) -> int:
    """`version` if it is one of `VERSIONS`.

    Raises:
        ValueError: any other value (one line, naming the versions this qarac knows).
    """
    if isinstance(version, bool) or version not in VERSIONS:
        raise ValueError(f"sharpened weight set version {version!r} is unknown to this qarac "
                         f"(it knows {', '.join(map(str, VERSIONS))}): use a qarac that knows it, or record the bundle again")
    return int(version)  # type: ignore[call-overload]


def version_of_bundle(meta: dict, schema_version: int | None) -> int:
    """The sharpened-set version a bundle's sharpened case used: its manifest's `VERSION_KEY`, else
    the version its schema was recorded with (schema 1: 1, schema 2: 2).

    Raises:
        ValueError: an unknown version, or neither the field nor a known schema.
    """
    if VERSION_KEY in meta:
        return checked_version(meta[VERSION_KEY])
    if schema_version not in _VERSION_OF_SCHEMA:
        raise ValueError(f"a bundle of schema {schema_version!r} without {VERSION_KEY} names no sharpened weight set")
    return _VERSION_OF_SCHEMA[schema_version]


@contextlib.contextmanager
def sharpened_weights(model: torch.nn.Module, version: int = CURRENT_VERSION) -> Iterator[None]:
    """`model` holds the sharpened weight set of `version` inside the block (changed in place), its own after it."""
    version = checked_version(version)
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            factor = _sharpening(name, parameter)
            if factor is not None:
                parameter.mul_(factor)
            spread = _spread(name, parameter) if version >= 2 else None
            if spread is not None:
                parameter.copy_(spread.to(parameter.device))
    try:
        yield
    finally:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(original[name])


@contextlib.contextmanager
def sharpened(pt_model: torch.nn.Module, tf_model: Any, weight_map: Any,
              version: int = CURRENT_VERSION) -> Iterator[None]:
    """Both models hold the sharpened weights (of `version`) inside the block, their own weights after it."""
    from parity import bridge

    try:
        with sharpened_weights(pt_model, version):
            bridge.copy_pt_to_tf(pt_model, tf_model, weight_map)
            yield
    finally:
        bridge.copy_pt_to_tf(pt_model, tf_model, weight_map)  # the port holds its own weights again
