"""Does one recording reproduce another? Two bundles of the same model and settings, compared
array by array, and result by result, with the shared rule (`parity.agreement`).

A recording made on another CPU (other oneDNN kernels, another instruction set, another thread
count) differs from the shipped one by float32 rounding, which is never zero and never the same
twice across machines. Each array is judged against the scale that means something for it:

- a forward value the legacy captured (an output, a stage's output, and every other array that
  holds the same values: a stage's input, the backward's stage inputs): its noise floor, measured
  by `check` of the reference bundle, bound `parity.noise.FLOOR_BOUND`;
- a gradient: its own magnitude, except the analytically-zero ones (the key biases), judged
  against the largest gradient of their set;
- every other float array (weights, backward gradients, the `l2_normalize` probe): its own
  magnitude; integer arrays (token ids, masks, labels): exactly.

The JSON results must agree exactly (the census, the warning's names, the orders), and the
training losses within the relative bound. The legacy's own reordering differences
(`noise_floors.legacy`) and the timings are measurements of noise and time, not results, and
are not compared.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from parity.agreement import Agreement, Scale, floor_scale, gradient_scales, judge, magnitude_scale
from parity.bundle import Bundle

_CAPTURED = re.compile(r"^legacy/(?P<case>[^/]+)/(?P<kind>output|stage_out)/(?P<name>.+)$")
_GRADIENT = re.compile(r"^gradients/(?P<mode>[^/]+)/(?P<name>.+)$")
# Results that must be equal; the rest are noise measurements or timings (module docstring).
EXACT_RESULTS = ("weight_summary", "determinism", "fit_warning", "parameters", "fit_missing",
                 "gradients_missing", "capture_orders", "backward_order")


@dataclass
class Reproduction:
    """Every array and result of `other` judged against `reference`.

    Attributes:
        agreements: one per array, and one per training loss (`training/<mode>/<step>/<loss>`).
        problems: structural differences (arrays on one side only, results that differ).
        passed: no problem, and every agreement within its bound.
    """

    agreements: list[Agreement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    passed: bool = False

    def worst(self, basis: str | None = None) -> Agreement | None:
        """The agreement with the largest ratio to its bound (of one basis, if given)."""
        chosen = [a for a in self.agreements if basis is None or a.basis == basis]
        return max(chosen, key=lambda a: a.ratio / a.bound if a.bound else (0.0 if a.ratio == 0 else float("inf")),
                   default=None)

    def failures(self) -> list[Agreement]:
        return [a for a in self.agreements if not a.passed]

    def to_dict(self) -> dict[str, Any]:
        worst = {basis: (w.to_dict() if (w := self.worst(basis)) else None)
                 for basis in sorted({a.basis for a in self.agreements})}
        return {"passed": self.passed, "problems": list(self.problems), "arrays": len(self.agreements),
                "worst_by_basis": worst, "failures": [a.to_dict() for a in self.failures()]}


def floors_of(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """case -> value -> noise floor, from a `check` report (`ParityReport.to_dict()`)."""
    return {case: dict(entry["floor"]) for case, entry in report["noise_floors"].items()}


def _content_key(value: np.ndarray) -> str:
    return hashlib.sha256(f"{value.dtype}{value.shape}".encode() + np.ascontiguousarray(value).tobytes()).hexdigest()


def value_scales(reference: Bundle, floors: Mapping[str, Mapping[str, float]], floor_bound: float) -> dict[str, Scale]:
    """The scale of every array of `reference` (see the module docstring).

    Args:
        floors: case -> value name (`output:<name>` or a stage) -> floor (`floors_of`).
        floor_bound: the verdict bound in floor units (`parity.noise.FLOOR_BOUND`).
    """
    scales: dict[str, Scale] = {}
    by_content: dict[str, Scale] = {}
    for name, value in reference.arrays.items():
        match = _CAPTURED.match(name)
        if not match:
            continue
        # `parity.noise` names an output's floor `output:trainer.<name>` (`parity.forward.output_arrays`)
        key = f"output:trainer.{match['name']}" if match["kind"] == "output" else match["name"]
        floor = floors.get(match["case"], {}).get(key)
        if floor is not None:
            scales[name] = floor_scale(floor, floor_bound)
            by_content.setdefault(_content_key(value), scales[name])
    modes: dict[str, dict[str, np.ndarray]] = {}
    for name, value in reference.arrays.items():
        if match := _GRADIENT.match(name):
            modes.setdefault(match["mode"], {})[match["name"]] = value
    for mode, grads in modes.items():
        scales.update({f"gradients/{mode}/{param}": scale for param, scale in gradient_scales(grads).items()})
    for name, value in reference.arrays.items():
        if name not in scales:
            same = by_content.get(_content_key(value)) if value.dtype.kind == "f" else None
            scales[name] = same if same is not None else magnitude_scale(value)
    return scales


def _training_losses(results: Mapping[str, Any]) -> dict[str, float]:
    training = results.get("training") or {}
    return {f"training/{mode}/{step}/{loss}": float(value)
            for mode in ("eager", "graph") for step, losses in enumerate(training.get(mode) or [])
            for loss, value in losses.items()}


def compare_bundles(reference: Bundle, other: Bundle, floors: Mapping[str, Mapping[str, float]],
                    floor_bound: float) -> Reproduction:
    """Judge every array and result of `other` against `reference` (module docstring)."""
    result = Reproduction()
    for side, names in (("reference", set(reference.arrays) - set(other.arrays)),
                        ("other", set(other.arrays) - set(reference.arrays))):
        if names:
            result.problems.append(f"arrays only in the {side} bundle: {sorted(names)[:5]}")
    scales = value_scales(reference, floors, floor_bound)
    for name in sorted(set(reference.arrays) & set(other.arrays)):
        result.agreements.append(judge(name, reference.arrays[name], other.arrays[name], scales[name]))
    for key in EXACT_RESULTS:
        if reference.results.get(key) != other.results.get(key):
            result.problems.append(f"result {key!r} differs")
    if (reference.results.get("training") or {}).get("settings") != (other.results.get("training") or {}).get("settings"):
        result.problems.append("the training settings differ")
    ours, theirs = _training_losses(reference.results), _training_losses(other.results)
    if set(ours) != set(theirs):
        result.problems.append("the recorded training steps differ")
    for name in sorted(set(ours) & set(theirs)):
        result.agreements.append(judge(name, np.float64(ours[name]), np.float64(theirs[name]),
                                       magnitude_scale(np.float64(ours[name]))))
    result.passed = not result.problems and all(a.passed for a in result.agreements)
    return result
