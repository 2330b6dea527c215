"""One rule for how far a value may move: its error over a scale that means something for it.

Every comparison of a recomputed value against a recorded or other-framework one, whether
the port against the legacy (`check`) or a fresh recording against a shipped bundle
(`parity.reproduction`), divides the error by the value's *meaningful scale* and judges the
ratio against the bound that belongs to that scale:

- a forward value with a measured noise floor (`parity.noise`): the floor, bound
  `parity.tolerance.FLOOR_BOUND` (passed in by the caller, which measured the floor);
- a gradient of a parameter that is analytically zero (`ANALYTICALLY_ZERO`): the largest
  gradient of the same set, since its own largest magnitude is rounding noise and dividing
  noise by itself gives ratios of order 1 for two equally right runs;
- any other float value: its own largest magnitude, bound `RELATIVE_BOUND`;
- integer values (token ids, masks, labels): exact.

Nothing here imports a framework: it compares numpy arrays.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import numpy as np

# Parameters whose gradient is zero in exact arithmetic: softmax ignores a shift common to all
# of a query's scores, so a key bias cannot change the loss. Both frameworks return float noise
# there (1e-12 on the tiny model, 1e-9 at roberta-base size), and two CPUs return different noise
# (an AMD EPYC and an Intel Xeon recording of the tiny model: 7.5e-13 apart on a value of 4.9e-13).
ANALYTICALLY_ZERO = re.compile(r"attention\.self\.key\.bias$")
# Relative bound for values judged against their own magnitude (gradients, backward stages, losses,
# weights). Measured: the same recording on an AMD EPYC and an Intel Xeon (other oneDNN kernels)
# differs by at most 1.7e-6 of each such value's scale; the port against the legacy by at most 7.3e-6
# on roberta-base shapes. 1e-4 keeps a 14x margin over the latter, and a real porting bug moves
# a gradient by percents.
RELATIVE_BOUND = 1e-4
_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Scale:
    """What a value's error is divided by, why, and the bound on the quotient.

    Attributes:
        value: the scale itself (> 0, or 0 for exact comparison).
        basis: "noise floor", "largest gradient of the set (analytically zero)", "own magnitude" or "exact".
        bound: the largest allowed error / value (0 for exact).
    """

    value: float
    basis: str
    bound: float


def floor_scale(floor: float, bound: float) -> Scale:
    """A value with a measured noise floor, judged in floor units."""
    return Scale(max(float(floor), _TINY), "noise floor", bound)


def magnitude_scale(reference: Any, bound: float = RELATIVE_BOUND) -> Scale:
    """A float value judged against its own largest magnitude; integers exactly."""
    array = np.asarray(reference)
    if array.dtype.kind in "iub":
        return Scale(0.0, "exact", 0.0)
    finite = array[np.isfinite(array)] if array.size else array
    return Scale(max(float(np.abs(finite).max(initial=0.0)), _TINY), "own magnitude", bound)


def largest_magnitude(arrays: Iterable[Any]) -> float:
    """The largest |x| over every (not None) array of a set."""
    return max((float(np.abs(np.asarray(a)).max(initial=0.0)) for a in arrays if a is not None), default=0.0)


def gradient_scale(name: str, reference: Any, largest: float, bound: float = RELATIVE_BOUND) -> Scale:
    """A parameter's gradient: against the set's `largest` gradient where it is analytically zero,
    else against its own magnitude."""
    if ANALYTICALLY_ZERO.search(name):
        return Scale(max(largest, _TINY), "largest gradient of the set (analytically zero)", bound)
    return magnitude_scale(reference, bound)


@dataclass
class Agreement:
    """One value judged by the rule.

    Attributes:
        name: what was compared.
        error: max |recomputed - recorded| (inf where shapes, dtypes or non-finite positions differ).
        scale, basis, bound: the `Scale` applied.
        ratio: error / scale (error itself on an exact scale).
        passed: ratio <= bound.
        problem: why it failed structurally, or None.
    """

    name: str
    error: float
    scale: float
    basis: str
    bound: float
    ratio: float
    passed: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _structural(name: str, scale: Scale, problem: str) -> Agreement:
    inf = float("inf")
    return Agreement(name, inf, scale.value, scale.basis, scale.bound, inf, False, problem)


def judge(name: str, recorded: Any, recomputed: Any, scale: Scale) -> Agreement:
    """Judge `recomputed` against `recorded` on `scale`.

    Non-finite values agree only where both sides hold the same one (NaN, +inf or -inf) at the
    same place; elsewhere the error is taken over the finite elements.
    """
    a, b = np.asarray(recorded), np.asarray(recomputed)
    if a.shape != b.shape:
        return _structural(name, scale, f"shape {b.shape} vs recorded {a.shape}")
    if a.dtype != b.dtype:
        return _structural(name, scale, f"dtype {b.dtype} vs recorded {a.dtype}")
    if a.dtype.kind == "f":
        same_kind = (np.isnan(a) == np.isnan(b)) & (np.isposinf(a) == np.isposinf(b)) & (np.isneginf(a) == np.isneginf(b))
        if not same_kind.all():
            return _structural(name, scale, "NaN/inf differ in kind or place")
        finite = np.isfinite(a)
        difference = np.subtract(b[finite], a[finite], dtype=np.float64)
    else:
        difference = np.subtract(b, a, dtype=np.float64)
    error = float(np.abs(difference).max(initial=0.0))
    ratio = error / scale.value if scale.value > 0 else error
    return Agreement(name, error, scale.value, scale.basis, scale.bound, ratio, ratio <= scale.bound)


def gradient_scales(gradients: Mapping[str, Any]) -> dict[str, Scale]:
    """The scale of every (not None) gradient of one set, keyed by parameter name."""
    largest = largest_magnitude(gradients.values())
    return {name: gradient_scale(name, value, largest) for name, value in gradients.items() if value is not None}
