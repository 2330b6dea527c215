"""Gradient parity: the same loss, weights and batch give the same gradients
in the PyTorch legacy preset and in the legacy model run eagerly."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from parity.agreement import ANALYTICALLY_ZERO, RELATIVE_BOUND, gradient_scale, largest_magnitude

# Gradients pass through the whole backward graph of both frameworks; on the tiny model they
# agree to ~1e-6 relative. The bound is the shared relative bound (`parity.agreement`).
GRADIENT_TOLERANCE = RELATIVE_BOUND
# Analytically-zero gradients (`parity.agreement.ANALYTICALLY_ZERO`) are judged against the largest
# gradient in the model, and both sides must stay below NOISE_FRACTION of it (a real gradient
# there would be a bug).
NOISE_FRACTION = 1e-6


# Parameters allowed a gradient on one side only, with the reason (none: both sides' missing sets
# are the same, the RoBERTa poolers; `parity.comparator` compares the sets themselves too).
DECLARED_ONE_SIDED: dict[str, str] = {}


@dataclass
class GradientComparison:
    """One parameter's gradient on both sides: max |pt - tf| / max |tf|."""

    name: str
    max_abs_err: float
    max_rel_err: float
    tolerance: float
    passed: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_gradients(pt: Mapping[str, np.ndarray | None], tf: Mapping[str, np.ndarray | None],
                      tolerance: float = GRADIENT_TOLERANCE,
                      declared: Mapping[str, str] | None = None) -> list[GradientComparison]:
    """Compare every parameter's gradient; one with a gradient on one side only (or named on one side
    only) fails, named, unless `declared` (default `DECLARED_ONE_SIDED`) gives the reason."""
    declared = DECLARED_ONE_SIDED if declared is None else declared
    largest = largest_magnitude(tf.values())
    results = []
    for name in sorted(set(pt) | set(tf)):
        if pt.get(name) is None and tf.get(name) is None:
            continue  # no gradient on either side: the census says why
        if pt.get(name) is None or tf.get(name) is None:
            side = "legacy" if pt.get(name) is None else "pytorch"
            why = declared.get(name)
            results.append(GradientComparison(name, float("nan"), float("nan"), tolerance, why is not None,
                                              f"a gradient on the {side} side only" + (f" (declared: {why})" if why else "")))
            continue
        a, b = np.asarray(pt[name]), np.asarray(tf[name])
        if a.shape != b.shape:
            results.append(GradientComparison(name, float("inf"), float("inf"), tolerance, False))
            continue
        difference = np.subtract(a, b, dtype=np.float64)  # exact for float32 inputs, one temporary
        abs_err = float(np.abs(difference, out=difference).max(initial=0.0))
        del difference
        scale = gradient_scale(name, b, largest, tolerance)  # the one rule (parity.agreement)
        rel_err = abs_err / scale.value
        passed = rel_err <= scale.bound
        if ANALYTICALLY_ZERO.search(name):
            noise = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
            passed = passed and noise <= NOISE_FRACTION * largest
        results.append(GradientComparison(name, abs_err, rel_err, tolerance, passed))
    return results
