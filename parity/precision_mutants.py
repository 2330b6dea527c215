"""Precision and non-determinism mutants, and benign variants (issue 32), judged by `parity.mutations.evaluate`.

The precision mutants act on the port's float32 path only, as autocast, TF32 or a half-precision kernel
would, leaving the float64 twin exact (so the float64 check cannot see them); each must fail forward or
precision parity with its stage named (`parity.precision`). The benign variants are the port written
differently but correctly, and must pass `check`. Each is a context manager planting a class- or
module-level patch (`parity.planting`), as the mutants of `parity.mutations` are.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch

from parity.planting import patched, sdpa_replaced


# --- precision (float32 path only) and non-determinism (issue 32) --------------------------------

def _float32_only(replacement: Callable[..., torch.Tensor], original: Callable[..., torch.Tensor]):
    """`original` where its first argument is not float32 (the float64 twin), `replacement(original, ...)` where it is."""
    def dispatched(x, *args, **kwargs):
        if x.dtype != torch.float32:
            return original(x, *args, **kwargs)
        return replacement(original, x, *args, **kwargs)

    return dispatched


def linear_bfloat16(run=None):
    """`torch.nn.functional.linear` with bfloat16 products for float32 inputs (autocast left on): inputs,
    weight and bias cast to bfloat16, the result back; the float64 twin untouched."""
    def low(linear, x, weight, bias=None):
        return linear(x.bfloat16(), weight.bfloat16(), None if bias is None else bias.bfloat16()).float()

    return patched(torch.nn.functional, "linear", _float32_only(low, torch.nn.functional.linear))


def _attention_by_hand(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       softmax_dtype: torch.dtype | None = None, **_):
    """Attention written out: softmax(q k^T x scale + mask) v; the softmax in `softmax_dtype` (None: q's)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, heads, T, S)
    if is_causal:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        attn_mask = causal if attn_mask is None else attn_mask & causal if attn_mask.dtype == torch.bool else \
            attn_mask.masked_fill(~causal, torch.finfo(scores.dtype).min)
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    if softmax_dtype is not None:
        finite = torch.finfo(softmax_dtype)  # the mask's float32 minimum would be -inf there
        probabilities = scores.clamp(finite.min, finite.max).to(softmax_dtype).softmax(-1).to(q.dtype)
    else:
        probabilities = scores.softmax(-1)
    return torch.matmul(probabilities, v)  # (B, heads, T, head size)


def softmax_float16(run=None):
    """Attention's softmax computed in float16 in the float32 path (a half-precision softmax kernel)."""
    def half(sdpa, q, k, v, mask, *args, **kwargs):
        if q.dtype != torch.float32:
            return sdpa(q, k, v, mask, *args, **kwargs)
        return _attention_by_hand(q, k, v, mask, *args, softmax_dtype=torch.float16, **kwargs)

    return sdpa_replaced(half)


def tf32_rounded(t: torch.Tensor) -> torch.Tensor:
    """A float32 tensor with its mantissa rounded to TF32's 10 bits (to nearest); other dtypes unchanged."""
    if t.dtype != torch.float32:
        return t
    bits = t.detach().contiguous().view(torch.int32)
    rounded = ((bits + 0x1000) & -0x2000).view(torch.float32)  # the low 13 of 23 mantissa bits dropped, rounded
    return t + (rounded - t).detach()  # exactly `rounded` (the difference is exact), differentiable as t


@contextlib.contextmanager
def matmul_tf32(run=None) -> Iterator[None]:
    """TF32 matmuls emulated on the CPU: every float32 product's inputs (linear layers, attention's q, k, v,
    the heads' `@`) cut to a 10-bit mantissa, as `allow_tf32` or `set_float32_matmul_precision("high")` would."""
    def linear(original, x, weight, bias=None):
        return original(tf32_rounded(x), tf32_rounded(weight), bias)

    def attention(sdpa, q, k, v, mask, *args, **kwargs):
        return sdpa(tf32_rounded(q), tf32_rounded(k), tf32_rounded(v), mask, *args, **kwargs)

    matmul = torch.Tensor.__matmul__
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(torch.nn.functional, "linear", _float32_only(linear, torch.nn.functional.linear)))
        stack.enter_context(sdpa_replaced(attention))
        stack.enter_context(patched(torch.Tensor, "__matmul__",
                                     lambda a, b: matmul(tf32_rounded(a), tf32_rounded(b))))
        yield


def dropout_active(run=None):
    """Dropout left active in the port (every `nn.Dropout` applies its rate whatever the mode)."""
    return patched(torch.nn.Dropout, "forward",
                    lambda self, x: torch.nn.functional.dropout(x, self.p, training=True, inplace=self.inplace))


# --- benign: the port written differently, correctly ---------------------------------------------

def attention_by_hand(run=None):
    """Attention written by hand in the port's dtype (softmax of the scaled scores plus the additive mask)."""
    return sdpa_replaced(lambda sdpa, q, k, v, mask, *args, **kwargs: _attention_by_hand(q, k, v, mask, *args, **kwargs))


def attention_float64(run=None):
    """Attention computed in float64 and cast back (more precise than the legacy: must pass)."""
    def wide(sdpa, q, k, v, mask, *args, **kwargs):
        up = lambda t: t if t is None or not t.is_floating_point() else t.double()  # noqa: E731
        return sdpa(up(q), up(k), up(v), up(mask), *args, **kwargs).to(q.dtype)

    return sdpa_replaced(wide)


def linear_by_hand(run=None):
    """`x @ W.T + b` instead of `F.linear` in every `nn.Linear`."""
    def forward(self, x):
        product = torch.matmul(x, self.weight.T)  # (..., out)
        return product if self.bias is None else product + self.bias

    return patched(torch.nn.Linear, "forward", forward)


def layer_norm_by_hand(run=None):
    """Layer norm written out: (x - mean) / sqrt(biased variance + eps) x gain + bias."""
    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        variance = (x - mean).square().mean(-1, keepdim=True)
        normed = (x - mean) / torch.sqrt(variance + self.eps)
        if self.weight is not None:
            normed = normed * self.weight
        return normed if self.bias is None else normed + self.bias

    return patched(torch.nn.LayerNorm, "forward", forward)


def gelu_by_hand(run=None):
    """GELU written out with erf: x / 2 (1 + erf(x / sqrt 2)), wherever the port applies GELU."""
    from transformers.activations import GELUActivation

    return patched(GELUActivation, "forward", lambda self, x: 0.5 * x * (1.0 + torch.erf(x * 0.7071067811865476)))


# Precision and non-determinism mutants (issue 32): the float32 path less precise than the legacy's, the
# float64 twin exact (so the float64 check cannot see them); each must fail `forward` or `precision`
# (or `spread`) with its stage named.
PRECISION_MUTANTS: Mapping[str, Callable[[Any], contextlib.AbstractContextManager]] = {
    "linear products in bfloat16 (float32 path only)": linear_bfloat16,
    "attention softmax in float16 (float32 path only)": softmax_float16,
    "TF32-like matmul inputs (10-bit mantissa)": matmul_tf32,
    "dropout active": dropout_active,
}
# The port written differently but correctly: each must pass `check` (bench/mutations.py fails otherwise).
BENIGN: Mapping[str, Callable[[Any], contextlib.AbstractContextManager]] = {
    "benign: attention written by hand (float32)": attention_by_hand,
    "benign: x @ W.T + b instead of F.linear": linear_by_hand,
    "benign: layer norm written by hand": layer_norm_by_hand,
    "benign: erf GELU written by hand": gelu_by_hand,
    "benign: attention in float64, cast back": attention_float64,
}
