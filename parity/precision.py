"""Precision parity: the port as precise as the original, judged against the original (issue 32).

A port that computes part of its float32 path in lower precision (bfloat16 products, a float16
softmax, TF32 matmuls, autocast left on) while its float64 twin runs in float64 moves exactly the
port's own rounding term of the noise floor (`|port32 - port64|`); so does a non-deterministic port
(dropout left active) through its reordered and repeated runs. Both are judged here, per value
(every output and stage of every compared case), against the legacy's own measurement of the same
thing, by the rule of `parity.tolerance` (`within_precision`):

- float32 error: the port's `|port32 - port64|` (its float64 twin's variant, `parity.port_noise`)
  against the legacy's `|legacy32 - legacy64|` (its recorded float64 run), never below one ulp;
- spread: the port's largest move under `parity.noise.SPREAD_VARIANTS` (permuted rows, one thread,
  the repeated forward) against the legacy's own (its permuted batch) and its float32 error: a
  reordering moves a float32 result by at most its float32 rounding, whose legacy scale is that
  error (on the tiny model the port's reorderings move values up to 10x the legacy's permuted
  batch, which is often bit-identical, and up to 3.1x the larger of the two).

The first stage over the bound in execution order is named (`first_precision_stage`,
`first_nondeterministic_stage`, "case: stage"). Localisation is by accumulated error only: the
bundle holds no float64 stage inputs of the legacy to feed each float64 stage its own input, and in a
forward chain the first stage over the bound is the first whose output lost precision. Reads the
floors' data only (`parity.noise.NoiseFloors`); imports no framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from parity.noise import SPREAD_VARIANTS, NoiseFloors
from parity.tolerance import PRECISION_BOUND, precision_ratio, within_precision

LOCALISATION = ("accumulated only: each stage's float32 error in the real forward against the legacy's; "
                "the first over the bound in execution order is named")


@dataclass
class PrecisionValue:
    """One value's precision and spread, port against legacy.

    Attributes:
        name: `output:<name>` or the stage.
        port_error: max |port32 - port64| (None: the port's float64 twin did not run on it).
        legacy_error: max |legacy32 - legacy64| (None: no float64 run of the legacy recorded).
        ulp: one float32 ulp of the value's largest legacy magnitude.
        ratio: port_error / max(legacy_error, ulp).
        port_spread / legacy_spread: the largest move of a reordered or repeated run, each side.
        spread_ratio: port_spread / max(legacy_spread, legacy_error, ulp).
    """

    name: str
    port_error: float | None
    legacy_error: float | None
    ulp: float
    ratio: float | None
    passed: bool
    port_spread: float
    legacy_spread: float
    spread_ratio: float
    spread_passed: bool


@dataclass
class PrecisionCase:
    """Every value of one case; the worst ratios, the values over, the first stages over the bound."""

    values: list[PrecisionValue] = field(default_factory=list)
    worst_ratio: float | None = None
    worst_spread_ratio: float | None = None
    over: list[str] = field(default_factory=list)
    spread_over: list[str] = field(default_factory=list)
    first_precision_stage: str | None = None
    first_nondeterministic_stage: str | None = None


def judge_value(name: str, floors: NoiseFloors) -> PrecisionValue:
    """Precision and spread of one value, from one case's floors (both sides' variants)."""
    ulp = floors.ulp[name]
    port, legacy = floors.pytorch.get(name, {}), floors.legacy.get(name, {})
    port_error, legacy_error = port.get("float64"), legacy.get("float64")
    ratio = None if port_error is None else precision_ratio(port_error, ulp, legacy_error)
    passed = port_error is None or within_precision(port_error, ulp, legacy_error)
    port_spread = max((moved for variant, moved in port.items() if variant in SPREAD_VARIANTS), default=0.0)
    legacy_spread = max((moved for variant, moved in legacy.items() if variant in SPREAD_VARIANTS), default=0.0)
    scale = max(legacy_spread, legacy_error or 0.0)
    return PrecisionValue(name, port_error, legacy_error, ulp, ratio, passed, port_spread, legacy_spread,
                          precision_ratio(port_spread, ulp, scale), within_precision(port_spread, ulp, scale))


def judge_case(floors: NoiseFloors, stages: Iterable[str]) -> PrecisionCase:
    """Every value of one case (outputs first, then `stages` in execution order)."""
    stages = list(stages)
    names = [name for name in floors.floor if name not in stages] + stages
    result = PrecisionCase([judge_value(name, floors) for name in names])
    ratios = [v.ratio for v in result.values if v.ratio is not None]
    result.worst_ratio = max(ratios, default=None)
    result.worst_spread_ratio = max((v.spread_ratio for v in result.values), default=None)
    result.over = [v.name for v in result.values if not v.passed]
    result.spread_over = [v.name for v in result.values if not v.spread_passed]
    result.first_precision_stage = next((name for name in stages if name in result.over), None)
    result.first_nondeterministic_stage = next((name for name in stages if name in result.spread_over), None)
    return result


def section(cases: dict[str, PrecisionCase], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's `precision` section: the bound, per case, the first stages named, the verdicts."""
    first = lambda key: next((f"{case}: {getattr(c, key)}" for case, c in cases.items()  # noqa: E731
                              if getattr(c, key)), None)
    worst = [c.worst_ratio for c in cases.values() if c.worst_ratio is not None]
    worst_spread = [c.worst_spread_ratio for c in cases.values() if c.worst_spread_ratio is not None]
    return {"bound": PRECISION_BOUND, "localisation": LOCALISATION,
            "cases": {case: asdict(c) for case, c in cases.items()},
            "worst_ratio": max(worst, default=None), "worst_spread_ratio": max(worst_spread, default=None),
            "first_precision_stage": first("first_precision_stage"),
            "first_nondeterministic_stage": first("first_nondeterministic_stage"),
            "passed": not any(c.over for c in cases.values()),
            "spread_passed": not any(c.spread_over for c in cases.values()),
            "settings": dict(settings or {})}
