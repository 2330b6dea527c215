"""The core's comparator: a Keras run against the port's run on it, one `PairReport`.

Runs no model and imports no framework: a verdict is a function of the two runs' data and the rule
(`parity.tolerance`). Every value (each stage's output in execution order, each model output, each
parameter's gradient) is judged the same way:

- forward and gradient parity: |port - keras| within `FLOOR_BOUND` floors, the floor taken from the
  original's side (`parity.tolerance.value_floor`: its float32 error against its float64 run and its
  permuted-rows spread; the port's own rounding counts only up to the precision allowance);
- precision: the port's float32 error (against its float64 twin) within `PRECISION_BOUND` times the
  original's float32 error (at least an ulp);
- determinism: the port's reordering spread (rows permuted, one thread) within the same multiple of
  the original's (at least an ulp), and a repeated forward bit-identical;
- float64 exactness: the port's float64 twin against the original's float64 run, relative to the
  value's magnitude, within `FLOAT64_BOUND` (round-off of float64: a wrong formula shows far above).

The first stage over each bound is named, in execution order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from parity.compare import compare_arrays
from parity.core.results import FLOAT32, FLOAT64, ONE_THREAD, PERMUTED, KerasRun, TorchRun
from parity.core.spec import EAGER, Pair
from parity.core.weights import Matched
from parity.tolerance import FLOOR_BOUND, PRECISION_BOUND, precision_ratio, value_floor, within_precision

F32_EPS = float(np.finfo(np.float32).eps)
# Relative bound of a float64 value of the port against the original's float64 run: float64 round-off
# through a few layers is ~1e-15 of a value's magnitude; a formula or a weight gone wrong is percents.
FLOAT64_BOUND = 1e-11


def _spread(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return 0.0
    return float(np.abs(np.subtract(a, b, dtype=np.float64)).max(initial=0.0))


def _magnitude(value: np.ndarray) -> float:
    return float(np.abs(np.where(np.isfinite(value), value, 0.0)).max(initial=0.0))


@dataclass
class ValueVerdict:
    """One value (stage, output or gradient) judged.

    Attributes:
        name: `case: stage:<name>`, `case: output:<name>` or `gradient: <torch key>`.
        error: max |port32 - keras32|.
        floor: its noise floor; ratio: error / floor; passed: ratio <= FLOOR_BOUND and no structural problem.
        keras_float32_error, port_float32_error: each side's float32 run against its float64 run.
        precision_ratio: port_float32_error / max(keras_float32_error, ulp); precision_passed.
        keras_reorder, port_reorder: each side's largest reordering move (rows permuted, one thread).
        float64_rel_err: |port64 - keras64| / max|keras64|; float64_passed.
        problem: a structural failure (shape, dtype, non-finite values in other places).
    """

    name: str
    error: float
    floor: float
    ratio: float
    passed: bool
    keras_float32_error: float
    port_float32_error: float
    precision_ratio: float
    precision_passed: bool
    keras_reorder: float
    port_reorder: float
    determinism_passed: bool
    float64_rel_err: float
    float64_passed: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_value(name: str, keras: Mapping[str, np.ndarray | None], port: Mapping[str, np.ndarray | None]) -> ValueVerdict:
    """Judge one value from each side's variants (`FLOAT32`, `FLOAT64`, and reorderings where run)."""
    k32, p32 = keras[FLOAT32], port[FLOAT32]
    structure = compare_arrays(name, p32, k32, 0.0)
    ulp = F32_EPS * _magnitude(k32)
    keras_f64 = _spread(k32, keras[FLOAT64])
    keras_reorder = _spread(k32, keras.get(PERMUTED))
    port_f64 = _spread(p32, port[FLOAT64]) if structure.problem is None else float("inf")
    port_reorder = max(_spread(p32, port.get(PERMUTED)), _spread(p32, port.get(ONE_THREAD)))
    floor = value_floor(ulp, keras_f64 + keras_reorder, max(port_f64, port_reorder), keras_f64)
    error = float("inf") if structure.problem else structure.max_abs_err
    precision = precision_ratio(port_f64, ulp, keras_f64)
    scale64 = _magnitude(np.asarray(keras[FLOAT64]))
    exact = compare_arrays(name, port[FLOAT64], keras[FLOAT64], 0.0)
    rel64 = float("inf") if exact.problem else (exact.max_abs_err / scale64 if scale64 > 0
                                                 else (0.0 if exact.max_abs_err == 0 else float("inf")))
    ratio = error / floor if floor > 0 else (0.0 if error == 0 else float("inf"))
    return ValueVerdict(name, error, floor, ratio, structure.problem is None and ratio <= FLOOR_BOUND,
                        keras_f64, port_f64, precision, precision <= PRECISION_BOUND, keras_reorder, port_reorder,
                        within_precision(port_reorder, ulp, keras_reorder), rel64, rel64 <= FLOAT64_BOUND, structure.problem)


@dataclass
class Census:
    """One side and mode's gradients: which parameters got none, which got exact zeros, which NaN/inf."""

    missing: list[str] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def census(gradients: Mapping[str, np.ndarray | None]) -> Census:
    result = Census()
    for name, value in sorted(gradients.items()):
        if value is None:
            result.missing.append(name)
        elif not np.isfinite(value).all():
            result.nonfinite.append(name)
        elif not np.any(value):
            result.zero.append(name)
    return result


@dataclass
class PairReport:
    """The verdict on a port, and everything it was judged from.

    Attributes:
        pair: the spec's name; versions: both sides' libraries.
        weights: the map as applied (entries, drops, kept torch keys, round-trip failures).
        values: every forward value, case by case, stages in execution order then outputs.
        gradients: every parameter's gradient (the gradient case, eager float32) judged like a value.
        census: "keras/<mode>" and "torch" -> `Census`, over torch keys.
        first_failing_stage, first_precision_stage, first_nondeterministic_stage, first_float64_stage:
            "case: stage" of the first stage over each bound, or None.
        checks: check name -> passed; passed: all of them.
    """

    pair: str
    versions: dict[str, str] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    values: list[ValueVerdict] = field(default_factory=list)
    gradients: list[ValueVerdict] = field(default_factory=list)
    census: dict[str, Census] = field(default_factory=dict)
    first_failing_stage: str | None = None
    first_precision_stage: str | None = None
    first_nondeterministic_stage: str | None = None
    first_float64_stage: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    passed: bool = False
    bundle: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["rule"] = {"floor_bound": FLOOR_BOUND, "precision_bound": PRECISION_BOUND, "float64_bound": FLOAT64_BOUND}
        return result


def _first_stage(values: list[ValueVerdict], passed: str) -> str | None:
    return next((v.name for v in values if ": stage:" in v.name and not getattr(v, passed)), None)


def _forward(keras: KerasRun, port: TorchRun) -> list[ValueVerdict]:
    verdicts = []
    for case, variants in keras.values.items():
        names = list(variants[FLOAT32])
        missing = [name for name in names if name not in port.values[case][FLOAT32]]
        if missing:
            raise ValueError(f"the port does not produce {missing[0]!r} (case {case}); it produces "
                             f"{sorted(port.values[case][FLOAT32])}")
        for name in names:
            verdicts.append(judge_value(f"{case}: {name}", {v: variants[v].get(name) for v in variants},
                                        {v: port.values[case][v].get(name) for v in port.values[case]}))
    return verdicts


def _gradients(keras: KerasRun, port: TorchRun, matched: Matched) -> list[ValueVerdict]:
    k32 = matched.gradients_to_torch(keras.gradients[EAGER])
    k64 = matched.gradients_to_torch(keras.gradients[FLOAT64])
    verdicts = []
    for name in port.parameters:
        if k32.get(name) is None or port.gradients[FLOAT32].get(name) is None:
            continue  # no gradient on a side: the census says so
        verdicts.append(judge_value(f"gradient: {name}", {FLOAT32: k32[name], FLOAT64: k64[name]},
                                    {FLOAT32: port.gradients[FLOAT32][name], FLOAT64: port.gradients[FLOAT64][name]}))
    return verdicts


def compare(pair: Pair, keras: KerasRun, port: TorchRun, matched: Matched) -> PairReport:
    """Judge the port's run against the original's."""
    report = PairReport(pair.name, {**{f"keras_{k}": v for k, v in keras.versions.items()}, **port.versions})
    report.weights = {"entries": [entry.describe() for entry in matched.entries], "dropped": list(matched.dropped),
                      "torch_kept": list(matched.torch_kept), "round_trip_failures": matched.round_trip(keras.weights)}
    report.values = _forward(keras, port)
    report.gradients = _gradients(keras, port, matched)
    parameters = set(port.parameters)
    for mode in pair.modes:
        mapped = matched.gradients_to_torch(keras.gradients[mode])
        report.census[f"keras/{mode}"] = census({k: v for k, v in mapped.items() if k in parameters})
    report.census["torch"] = census(port.gradients[FLOAT32])
    report.first_failing_stage = _first_stage(report.values, "passed")
    report.first_precision_stage = _first_stage(report.values, "precision_passed")
    report.first_nondeterministic_stage = _first_stage(report.values, "determinism_passed")
    report.first_float64_stage = _first_stage(report.values, "float64_passed")
    declared = set(pair.declared_missing)
    eager, torch_side = report.census[f"keras/{EAGER}"], report.census["torch"]
    report.checks = {
        "weights_round_trip": not report.weights["round_trip_failures"],
        "forward": all(v.passed for v in report.values),
        "precision": all(v.precision_passed for v in report.values),
        "determinism": port.repeat_identical and all(v.determinism_passed for v in report.values),
        "float64_exactness": all(v.float64_passed for v in report.values + report.gradients),
        "gradient_parity": all(v.passed for v in report.gradients),
        "gradient_missing_sets_agree": set(torch_side.missing) - declared == set(eager.missing) - declared,
        "gradients_finite": not torch_side.nonfinite,
    }
    report.passed = all(report.checks.values())
    return report
