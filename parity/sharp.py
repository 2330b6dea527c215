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
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, Iterator

import torch

GAIN = 1.5
EMBEDDING_GAIN = 3.0
SPREAD = 0.2


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


@contextlib.contextmanager
def sharpened_weights(model: torch.nn.Module) -> Iterator[None]:
    """`model` holds the sharpened weight set inside the block (rescaled in place), its own after it."""
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            factor = _sharpening(name, parameter)
            if factor is not None:
                parameter.mul_(factor)
            spread = _spread(name, parameter)
            if spread is not None:
                parameter.copy_(spread.to(parameter.device))
    try:
        yield
    finally:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(original[name])


@contextlib.contextmanager
def sharpened(pt_model: torch.nn.Module, tf_model: Any, weight_map: Any) -> Iterator[None]:
    """Both models hold the sharpened weights inside the block, their own weights after it."""
    from parity import bridge

    try:
        with sharpened_weights(pt_model):
            bridge.copy_pt_to_tf(pt_model, tf_model, weight_map)
            yield
    finally:
        bridge.copy_pt_to_tf(pt_model, tf_model, weight_map)  # the port holds its own weights again
