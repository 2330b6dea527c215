"""Float64 exactness: the port in float64 against the legacy in float64.

Both sides are run a second time in float64 with the same weights (float32
values, exact in float64) and batches: the legacy by `parity.legacy.float64`
(`LegacyFloat64`), the port by its float64 twin (`parity.noise.float64_twin`,
the same code path as the port). A faithful port then agrees to float64
round-off, so this check resolves a semantic difference many orders of
magnitude below what a float32 comparison can see (its floor is float32
rounding, about 1e-7 of a value's scale).

Every output and stage of every recorded batch (the all-padding row's real
rows) and every parameter's gradient of the total loss is compared; each
error is divided by a scale that means something for it: the value's largest
legacy magnitude (over real tokens), or for a gradient that is zero in exact
arithmetic (`parity.gradient_parity.ANALYTICALLY_ZERO`) the model's largest
gradient. The result is judged against `FLOAT64_BOUND`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from parity.stages import Capture
from parity.compare import compare_arrays
from parity.forward import TOKEN_OUTPUTS, output_arrays, stage_mask
from parity.gradient_parity import ANALYTICALLY_ZERO

# Relative bound (error / scale). Measured on the clean port against reference/tiny (bench/README.md
# section 6): worst 4.8e-15 over every output and stage of the five batches, 1.6e-15 over the
# gradients: float64 round-off through a few layers (a float32 constant left in the legacy's float64
# run showed as 1e-8 to 3e-8 before it was substituted: `parity.legacy.float64.FLOAT64_SUBSTITUTES`). 1e-11
# leaves three orders of magnitude for deeper and wider models' longer sums, and stays four orders
# below the float32 verdict's resolution (2.8e-7 of a value's scale at best).
FLOAT64_BOUND = 1e-11


@dataclass
class ExactValue:
    """One value (an output, a stage or a gradient) compared in float64.

    Attributes:
        name: `case.output`, `case: stage` or `gradient: parameter`.
        max_abs_err: max |port64 - legacy64| over real tokens.
        scale: what the error is divided by (see the module docstring).
        rel_err: max_abs_err / scale.
        float32_detectable: the smallest relative error the float32 verdict would catch on this value
            (`parity.tolerance.FLOOR_BOUND` x its floor / scale), where it has a floor.
        passed: rel_err <= `FLOAT64_BOUND`, and no structural or non-finite problem.
        problem: the structural or non-finite problem, if any.
    """

    name: str
    max_abs_err: float
    scale: float
    rel_err: float
    passed: bool
    float32_detectable: float | None = None
    problem: str | None = None


@dataclass
class ExactnessResult:
    """Every float64 comparison, the first stage over the bound per case, and the legacy's substitutes."""

    bound: float = FLOAT64_BOUND
    values: list[ExactValue] = field(default_factory=list)
    gradients: list[ExactValue] = field(default_factory=list)
    first_failing_stage: dict[str, str | None] = field(default_factory=dict)
    substitutes: dict[str, str] = field(default_factory=dict)
    worst: float = 0.0

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.values) and all(g.passed for g in self.gradients)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _judged(name: str, port: np.ndarray, legacy: np.ndarray, mask: np.ndarray | None, scale: float | None = None,
            floor: float | None = None, bound_in_floors: float | None = None) -> ExactValue:
    comparison = compare_arrays(name, port, legacy, 0.0, mask)
    if comparison.problem:
        return ExactValue(name, comparison.max_abs_err, float("nan"), float("inf"), False, problem=comparison.problem)
    if scale is None:
        scale = _scale(legacy, mask)
    rel = comparison.max_abs_err / scale if scale > 0 else (0.0 if comparison.max_abs_err == 0 else float("inf"))
    detectable = None if floor is None or bound_in_floors is None or scale == 0 else bound_in_floors * floor / scale
    return ExactValue(name, comparison.max_abs_err, scale, rel, rel <= FLOAT64_BOUND, detectable)


def _scale(value: np.ndarray, mask: np.ndarray | None) -> float:
    """The largest finite magnitude of `value` over real tokens."""
    magnitude = np.abs(np.where(np.isfinite(value), value, 0.0))
    if mask is None:
        return float(magnitude.max(initial=0.0))
    real = np.broadcast_to(mask.astype(bool).reshape(mask.shape + (1,) * (value.ndim - 2)), value.shape)
    return float(magnitude.max(initial=0.0, where=real))


def compare_case(result: ExactnessResult, case: str, port: Capture, legacy: Capture, inputs: Mapping[str, Any],
                 floors: Mapping[str, float] | None = None, bound_in_floors: float | None = None) -> None:
    """Every output and stage of one batch, port64 against legacy64; the first stage over the bound."""
    floors = floors or {}
    pt_out, tf_out = output_arrays(port), output_arrays(legacy)
    for name, legacy_value in tf_out.items():
        token = TOKEN_OUTPUTS.get(name)
        mask = inputs[token].attention_mask.numpy() if token else None
        result.values.append(_judged(f"{case}.{name}", pt_out[name], legacy_value, mask,
                                     floor=floors.get(f"output:{name}"), bound_in_floors=bound_in_floors))
    first = None
    for stage in legacy.order:
        if stage not in port.stage_outputs:
            result.values.append(ExactValue(f"{case}: {stage}", float("nan"), float("nan"), float("inf"), False,
                                            problem="the port's float64 forward did not run this stage"))
            first = first or stage
            continue
        value = _judged(f"{case}: {stage}", port.stage_outputs[stage], legacy.stage_outputs[stage],
                        stage_mask(stage, inputs), floor=floors.get(stage), bound_in_floors=bound_in_floors)
        result.values.append(value)
        if not value.passed and first is None:
            first = stage
    result.first_failing_stage[case] = first


def compare_real_rows(result: ExactnessResult, case: str, port: Capture, legacy: Capture, rows: slice) -> None:
    """The outputs of one batch on the given rows only (the all-padding row's real rows)."""
    pt_out, tf_out = output_arrays(port), output_arrays(legacy)
    for name, legacy_value in tf_out.items():
        result.values.append(_judged(f"{case}.{name} (real rows)", pt_out[name][rows], legacy_value[rows], None))


def compare_gradients(result: ExactnessResult, port: Mapping[str, np.ndarray | None],
                      legacy: Mapping[str, np.ndarray | None]) -> None:
    """Every parameter's gradient; a gradient on one side only fails, named."""
    largest = max((float(np.abs(g).max(initial=0.0)) for g in legacy.values() if g is not None), default=0.0)
    for name in sorted(set(port) | set(legacy)):
        a, b = port.get(name), legacy.get(name)
        label = f"gradient: {name}"
        if a is None and b is None:
            continue  # missing on both sides: the census and the missing-set check judge that
        if a is None or b is None:
            side = "legacy" if a is None else "port"
            result.gradients.append(ExactValue(label, float("nan"), float("nan"), float("inf"), False,
                                               problem=f"only the {side} has a gradient"))
            continue
        scale = largest if ANALYTICALLY_ZERO.search(name) else None
        result.gradients.append(_judged(label, np.asarray(a), np.asarray(b), None, scale))


def finish(result: ExactnessResult) -> ExactnessResult:
    result.worst = max((v.rel_err for v in [*result.values, *result.gradients]), default=0.0)
    return result
