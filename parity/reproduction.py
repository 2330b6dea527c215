"""Does one recording reproduce another? Two bundles of the same model and settings, compared
array by array and result by result, by the shared rule (`parity.agreement`), with a bar that
only the recordings themselves set: no port runs here.

A recording made on another CPU (other oneDNN kernels, another instruction set, another thread
count) differs from the shipped one by float32 rounding, never zero and never the same across
machines. Each value is judged against the scale that means something for it:

- a value the legacy also computed in float64 (every captured forward output and stage, the
  eager gradients): the reference's own float32 error against its float64 run, plus the two
  float64 runs' disagreement (round-off), at least one float32 ulp of the value; the bound is
  `REPRODUCTION_BOUND`. Element by element |A - B| <= |A - A64| + |A64 - B64| + |B64 - B|: a
  faithful recording B is within about twice A's error, but the scale is A's alone, since a
  recording that also set its own bar (|B - B64|) would widen it with every error it makes.
  An output of fewer than `SMALL_ARRAY` values (the consistency cosines, 1-5 values a case) holds
  too few roundings for its largest one to be the computation's: its |A - A64| is the largest
  over every case of the reference that captured the same output;
- any other gradient: its own magnitude, except the analytically-zero ones (the key biases),
  judged against the largest gradient of their set;
- any other float array (weights, the backward's arrays, the `l2_normalize` probe, the captures
  of a case with no float64 run): its own magnitude; integers (token ids, masks, labels) exactly.

The JSON results must agree exactly (the census, the warning's names, the orders), the training
losses by the relative bound. The legacy's own reordering differences (`noise_floors.legacy`)
and the timings measure noise and time, not results, and are not compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from parity.agreement import Agreement, Scale, gradient_scales, judge, magnitude_scale
from parity.bundle import Bundle

# Arrays of the legacy's float32 run and the name of their float64 counterpart (`parity.legacy.float64`).
_FLOAT64_OF = ((re.compile(r"^legacy/(?P<rest>.+)$"), "legacy64/{rest}"),
               (re.compile(r"^gradients/tf/eager/(?P<rest>.+)$"), "gradients64/tf/eager/{rest}"))
_GRADIENT = re.compile(r"^gradients/(?P<mode>[^/]+)/(?P<name>.+)$")
FLOAT64_PREFIXES = ("legacy64/", "gradients64/")
F32_EPS = float(np.finfo(np.float32).eps)
# Results that must be equal; the rest are noise measurements or timings (module docstring).
EXACT_RESULTS = ("weight_summary", "determinism", "fit_warning", "parameters", "fit_missing",
                 "gradients_missing", "capture_orders", "backward_order")
TRIANGLE = "reference's float32 error against its float64 run"
# Bound in units of that scale. Measured: an Intel Xeon recording against an AMD EPYC one of the
# same commit (tests/fixtures), 291 values: worst 3.01 (the consistency output, whose error is a few
# ulps); the other recording's own error reached 4.0x the reference's there. 6 keeps a 2x margin,
# and a value moved by 10 of its scales lands at 10 - 3 = 7 or more, above it.
REPRODUCTION_BOUND = 6.0
# Below this many values an array's largest float32 error is a draw of a few roundings: measured, the
# one-value consistency output of the `max_length` case had 6.5e-8 against its float64 run, the same
# cosine in the other cases up to 4.5e-7, and a faithful SSE4.1 recording landed 4.1e-7 away (5.2
# of the lucky scale). Every other captured array holds hundreds of values or more.
SMALL_ARRAY = 16


@dataclass
class Reproduction:
    """Every array and result of `other` judged against `reference`.

    Attributes:
        agreements: one per array both hold, and one per training loss (`training/<mode>/<step>/<loss>`).
        problems: structural differences (arrays on one side only, results that differ).
        passed: no problem, and every agreement within its bound.
    """

    agreements: list[Agreement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    passed: bool = False

    def worst(self, basis: str | None = None) -> Agreement | None:
        """The agreement with the largest ratio to its bound (of one basis, if given)."""
        chosen = [a for a in self.agreements if basis is None or a.basis == basis]
        return max(chosen, key=_over_bound, default=None)

    def failures(self) -> list[Agreement]:
        return [a for a in self.agreements if not a.passed]

    def to_dict(self) -> dict[str, Any]:
        worst = {basis: (w.to_dict() if (w := self.worst(basis)) else None)
                 for basis in sorted({a.basis for a in self.agreements})}
        return {"passed": self.passed, "problems": list(self.problems), "arrays": len(self.agreements),
                "worst_by_basis": worst, "failures": [a.to_dict() for a in self.failures()]}


def _over_bound(agreement: Agreement) -> float:
    if agreement.bound:
        return agreement.ratio / agreement.bound
    return 0.0 if agreement.ratio == 0 else float("inf")


def _max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.subtract(a, b, dtype=np.float64)).max(initial=0.0))


def _float32_error(name: str, twin: str, bundle: Bundle) -> float:
    """|A - A64| of `name`; for a small array the largest over every case holding the same output."""
    if bundle.arrays[name].size >= SMALL_ARRAY or not name.startswith("legacy/"):
        return _max_difference(bundle.arrays[name], bundle.arrays[twin])
    output = name.split("/", 2)[2]  # legacy/<case>/<output>
    errors = []
    for case in {other.split("/")[1] for other in bundle.arrays if other.startswith("legacy/")}:
        value, value64 = bundle.arrays.get(f"legacy/{case}/{output}"), bundle.arrays.get(f"legacy64/{case}/{output}")
        if value is not None and value64 is not None and value.shape == value64.shape and np.isfinite(value64).all():
            errors.append(_max_difference(value, value64))
    return max(errors)


def _triangle_scale(name: str, reference: Bundle, other: Bundle) -> Scale | None:
    """|A - A64| + |A64 - B64| (+ one ulp) for a value both recordings also hold in float64, else None."""
    for pattern, template in _FLOAT64_OF:
        if match := pattern.match(name):
            twin = template.format(**match.groupdict())
            a64, b64 = reference.arrays.get(twin), other.arrays.get(twin)
            if a64 is None or b64 is None:
                return None
            a = reference.arrays[name]
            if not (np.isfinite(a64).all() and np.isfinite(b64).all()) or a.shape != a64.shape:
                return None
            ulp = F32_EPS * float(np.abs(a).max(initial=0.0))
            value = _float32_error(name, twin, reference) + _max_difference(a64, b64) + ulp
            return Scale(max(value, float(np.finfo(np.float32).tiny)), TRIANGLE, REPRODUCTION_BOUND)
    return None


def value_scales(reference: Bundle, other: Bundle) -> dict[str, Scale]:
    """The scale of every array both bundles hold (see the module docstring)."""
    common = set(reference.arrays) & set(other.arrays)
    scales: dict[str, Scale] = {}
    modes: dict[str, dict[str, np.ndarray]] = {}
    for name in common:
        if name.startswith(FLOAT64_PREFIXES):
            continue  # the float64 runs serve as the bar; their own disagreement is in every triangle
        if (triangle := _triangle_scale(name, reference, other)) is not None:
            scales[name] = triangle
        elif match := _GRADIENT.match(name):
            modes.setdefault(match["mode"], {})[match["name"]] = reference.arrays[name]
        else:
            scales[name] = magnitude_scale(reference.arrays[name])
    for mode, grads in modes.items():
        scales.update({f"gradients/{mode}/{param}": scale for param, scale in gradient_scales(grads).items()})
    return scales


def _training_losses(results: Mapping[str, Any]) -> dict[str, float]:
    training = results.get("training") or {}
    return {f"training/{mode}/{step}/{loss}": float(value)
            for mode in ("eager", "graph") for step, losses in enumerate(training.get(mode) or [])
            for loss, value in losses.items()}


def compare_bundles(reference: Bundle, other: Bundle) -> Reproduction:
    """Judge every array and result of `other` against `reference` (module docstring)."""
    result = Reproduction()
    for side, names in (("reference", set(reference.arrays) - set(other.arrays)),
                        ("other", set(other.arrays) - set(reference.arrays))):
        if names:
            result.problems.append(f"arrays only in the {side} bundle: {sorted(names)[:5]}")
    for name, scale in sorted(value_scales(reference, other).items()):
        result.agreements.append(judge(name, reference.arrays[name], other.arrays[name], scale))
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


_SAME_INPUTS = ("inputs/", "targets/", "weights/")


def with_float64_run(recording: Bundle, donor: Bundle, cases: tuple[str, ...] | None = None) -> Bundle:
    """`recording`, made without the legacy's float64 run (bundle schema 1), given `donor`'s.

    A float64 run is the same on every x86 CPU to far below any float32 error (two float64
    libraries differ by ~1e-15 relative; a float32 ulp is 6e-8), so one machine's float64 run
    measures the float32 error of a recording made on another, provided both recorded the same
    weights and batches: checked here, exactly for integers, by the shared rule for weights.

    Args:
        cases: the captured cases whose float64 forward to take (None: all the donor has); leave
            out a case computed differently in the two (e.g. another sharpened weight set).

    Raises:
        ValueError: the two did not record the same weights and batches, or `donor` has no float64 run.
    """
    if not any(name.startswith(FLOAT64_PREFIXES) for name in donor.arrays):
        raise ValueError(f"bundle {donor.directory} holds no float64 run of the legacy")
    for name, value in donor.arrays.items():
        if name.startswith(_SAME_INPUTS):
            other = recording.arrays.get(name)
            if other is None or not judge(name, value, other, magnitude_scale(value)).passed:
                raise ValueError(f"{name} differs between {recording.directory} and {donor.directory}: "
                                 "a float64 run serves only a recording of the same weights and batches")

    def taken(name: str) -> bool:
        if name.startswith("legacy64/"):
            return cases is None or name.split("/")[1] in cases
        return name.startswith("gradients64/")

    arrays = {**recording.arrays, **{n: v for n, v in donor.arrays.items() if taken(n)}}
    descriptions = {**recording.descriptions, **{n: d for n, d in donor.descriptions.items() if taken(n)}}
    meta = {**recording.meta, "float64_from": f"{donor.directory} (digest {donor.digest})"}
    return Bundle(arrays=arrays, descriptions=descriptions, results=dict(recording.results), meta=meta,
                  model_dir=recording.model_dir, directory=recording.directory)
