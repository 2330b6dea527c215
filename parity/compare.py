"""Numerical comparison of two frameworks' outputs, leaf by leaf.

Like transformers' PT/TF equivalence checks: structure, shape and dtype are
checked before values, NaN/inf must sit in the same places, and a value error
is reported with more than its maximum: the worst element's position and
values, the relative error there, p99 of the absolute error, the cosine, and
(for token-aligned outputs) real tokens and padding positions apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from parity.tolerance import TINY_TOLERANCE


@dataclass
class Comparison:
    """How far a PyTorch output is from the legacy one.

    Attributes:
        name: the output or stage compared.
        shape: the (common) shape.
        max_abs_err: max |pt - tf| over the elements that count (real tokens when a mask is given).
        max_rel_err: |pt - tf| / max(|tf|, tiny) at that worst element.
        worst_index: position of the worst element, e.g. (batch, token, unit).
        worst_values: (pt, tf) at the worst element.
        p99_abs_err: 99th percentile of |pt - tf|.
        cosine: cosine of the flattened outputs.
        padding_max_abs_err: max |pt - tf| over padding positions (None: no mask or no padding).
        tolerance: absolute tolerance applied to max_abs_err.
        passed: structure matched, non-finite values sit in the same places with the same kind (NaN,
            +inf, -inf), and max_abs_err (over the finite elements) <= tolerance.
        problem: why it failed, when the failure is structural.
        noise_floor: the value's float32 noise floor (`parity.noise`), when measured.
        floor_ratio: max_abs_err in noise-floor units, when measured.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple[int, ...]
    worst_values: tuple[float, float]
    p99_abs_err: float
    cosine: float
    padding_max_abs_err: float | None
    tolerance: float
    passed: bool
    problem: str | None = None
    noise_floor: float | None = None
    floor_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _structural_failure(name: str, problem: str, tolerance: float, shape=()) -> Comparison:
    nan = float("nan")
    return Comparison(name, tuple(shape), nan, nan, (), (nan, nan), nan, nan, None, tolerance, False, problem)


def _kinds(value: np.ndarray) -> np.ndarray:
    """Per element: 0 finite, 1 NaN, 2 +inf, 3 -inf."""
    kinds = np.zeros(value.shape, dtype=np.int8)
    if value.dtype.kind in "fc":
        kinds[np.isnan(value)] = 1
        kinds[np.isposinf(value)] = 2
        kinds[np.isneginf(value)] = 3
    return kinds


KIND_NAMES = ("finite", "nan", "+inf", "-inf")


def nonfinite_disagreement(pt: np.ndarray, tf: np.ndarray) -> str | None:
    """None when NaN, +inf and -inf sit at the same places with the same kind on both sides; else the
    first position where they do not, named with both values, and how many positions differ."""
    if pt.dtype.kind not in "fc" or (np.isfinite(pt).all() and np.isfinite(tf).all()):
        return None
    a, b = _kinds(pt), _kinds(tf)
    differ = a != b
    if not differ.any():
        return None
    where = tuple(int(i) for i in np.argwhere(differ)[0])
    return (f"non-finite values differ at {int(differ.sum())} positions, first at {where}: pytorch "
            f"{KIND_NAMES[a[where]]} ({float(pt[where])!r}), legacy {KIND_NAMES[b[where]]} ({float(tf[where])!r})")


def compare_arrays(name: str, pt: Any, tf: Any, tolerance: float = TINY_TOLERANCE,
                   token_mask: np.ndarray | None = None) -> Comparison:
    """Compare one output of both frameworks.

    Args:
        name: what is compared (named in the report).
        pt, tf: arrays (anything `np.asarray` takes: numpy, torch on CPU, tf eager tensors).
        tolerance: absolute tolerance on the real-token elements.
        token_mask: (B, T) 1 for real tokens; when given, the first two axes of
            the outputs are (batch, token) and padding positions are reported apart.
    """
    pt, tf = np.asarray(pt), np.asarray(tf)
    if pt.shape != tf.shape:
        return _structural_failure(name, f"shape differs: pytorch {pt.shape} vs legacy {tf.shape}", tolerance, pt.shape)
    if pt.dtype.kind != tf.dtype.kind:
        return _structural_failure(name, f"dtype differs: pytorch {pt.dtype} vs legacy {tf.dtype}", tolerance, pt.shape)
    if pt.size == 0:
        return _structural_failure(name, "empty output", tolerance, pt.shape)
    finite = np.isfinite(pt)
    problem = nonfinite_disagreement(pt, tf)
    if problem:
        return _structural_failure(name, problem, tolerance, pt.shape)
    all_finite = bool(finite.all())
    # float64 from the start (pt - tf exact for float32 inputs), without float64 copies of the inputs
    with np.errstate(invalid="ignore"):  # inf - inf where both hold the same inf: zeroed below
        error = np.subtract(pt, tf, dtype=np.float64)
    np.abs(error, out=error)
    if not all_finite:
        error[~finite] = 0.0
    padding_err = None
    real = None
    if token_mask is not None:
        mask = np.asarray(token_mask).astype(bool)
        real = np.broadcast_to(mask.reshape(mask.shape + (1,) * (pt.ndim - 2)), pt.shape)
        if real.all():
            real = None
        else:
            padding_err = float(error[~real].max())
    counted = error if real is None else np.where(real, error, -1.0)
    worst = np.unravel_index(int(np.argmax(counted)), pt.shape)
    max_abs = float(error[worst])
    reference = float(tf[worst])
    rel = max_abs / max(abs(reference), 1e-12)
    p99 = float(np.percentile(error if real is None else error[real], 99))
    a = (pt if all_finite else pt[finite]).ravel().astype(np.float64)
    b = (tf if all_finite else tf[finite]).ravel().astype(np.float64)
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / denominator) if denominator > 0 else float(np.array_equal(a, b))
    return Comparison(name, tuple(pt.shape), max_abs, rel, tuple(int(i) for i in worst),
                      (float(pt[worst]), reference), p99, cosine, padding_err, tolerance,
                      max_abs <= tolerance)


@dataclass
class ParityFailure(AssertionError):
    """Raised by the assert_* helpers; carries the failing comparisons."""

    failures: list[Comparison] = field(default_factory=list)

    def __str__(self) -> str:
        lines = []
        for c in self.failures:
            if c.problem:
                lines.append(f"{c.name}: {c.problem}")
            else:
                lines.append(f"{c.name}: max abs err {c.max_abs_err:.3g} > {c.tolerance:.1g} at {c.worst_index} "
                             f"(pytorch {c.worst_values[0]:.6g}, legacy {c.worst_values[1]:.6g}), p99 {c.p99_abs_err:.3g}")
        return "forward parity failed:\n  " + "\n  ".join(lines)
