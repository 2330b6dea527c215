"""The comparator: a legacy run (`LegacyRun`) against the port's run on it (`PortRun`), one `ParityReport`.

weight bridge -> forward -> layers -> gradients -> gradient parity -> deviation
ledger. Both sides arrive as data, from their runners (`parity.legacy`, which may
have written its run to a bundle first, and `parity.port_runner`); `compare` runs no
model and imports no runner (tests/test_layout.py), so a verdict is a function of the
two results and the rule (`parity.tolerance.Tolerance`) alone. Formatting lives in
`parity.report` and `parity.plot`; this module only computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from parity import backward, exactness, forward, gradient_parity, gradients, noise, precision
from parity.compare import Comparison, compare_arrays
from parity.results import LegacyRun, ParityReport, PortRun
from parity.stages import Capture
from parity.tolerance import Tolerance
from parity.training import compare_training
from qarac.objectives import OBJECTIVES

# The six variables the original's traced `fit` leaves without a gradient (its "Gradients do not
# exist" warning): the RoBERTa poolers and the pooling heads' local projections.
SEED_MISSING = {
    "question_encoder.encoder.pooler.dense.weight", "question_encoder.encoder.pooler.dense.bias",
    "decoder.decoder.pooler.dense.weight", "decoder.decoder.pooler.dense.bias",
    "question_encoder.head.local_projection", "answer_encoder.head.local_projection",
}
# The compared cases, in report order; `sharp` is the padded batch under the sharpened weights.
FORWARD_CASES = ("padded", "unpadded", "max_length", "sharp")


@dataclass
class ForwardCase:
    """One batch compared: outputs and stages, the floors, the introduced errors (None: not measured)."""

    result: forward.CaseResult
    floors: noise.NoiseFloors
    introduced: list[Comparison] | None


def batch_of(case: str) -> str:
    """The batch a case ran on."""
    return "padded" if case == "sharp" else case


def forward_case(run: LegacyRun, port: PortRun, case: str, rule: Tolerance) -> ForwardCase:
    """Every comparison of one batch: the port's capture against the legacy's, each value judged by `rule`."""
    inputs, legacy = run.inputs[batch_of(case)], run.captures[case]
    legacy64 = run.float64.captures.get(case) if run.float64 is not None else None
    floors = noise.floors(port.noise[case], legacy, run.legacy_floors[case], inputs, legacy64)
    bound = rule.bound_in_floors
    result = forward.compare_captures(port.captures[case], legacy, inputs, case, rule.absolute, floors.floor, bound)
    fed = port.introduced.get(case)
    introduced = (None if fed is None else
                  forward.introduced_errors(fed, legacy, inputs, rule.absolute, floors.floor, bound))
    return ForwardCase(result, floors, introduced)


def stage_errors(case: ForwardCase) -> list[dict[str, Any]]:
    """Per stage: error accumulated up to it (real forward) and introduced by it (fed the legacy's input)."""
    rows = []
    for accumulated, introduced in zip(case.result.stages, case.introduced or []):
        rows.append({"stage": accumulated.name, "accumulated_max_abs_err": accumulated.max_abs_err,
                     "introduced_max_abs_err": introduced.max_abs_err, "noise_floor": accumulated.noise_floor,
                     "accumulated_floor_ratio": accumulated.floor_ratio, "introduced_floor_ratio": introduced.floor_ratio,
                     "tolerance": introduced.tolerance, "introduced_passed": introduced.passed,
                     "accumulated_passed": accumulated.passed})
    return rows


def compare(run: LegacyRun, port: PortRun, rule: Tolerance) -> ParityReport:
    """Judge the port's run against the legacy's: every section of the report, and the checks."""
    report = ParityReport(model=str(run.meta["model"]), versions={**port.versions, **{
        f"legacy_{k}": v for k, v in run.meta["legacy_versions"].items()}})
    report.verdict = rule.verdict()
    report.weights = dict(run.weight_summary)
    cases = {case: forward_case(run, port, case, rule) for case in FORWARD_CASES}
    _forward_sections(report, cases)
    report.special_cases["all_padding_row"] = all_padding_row(port.captures["all_padding_row"],
                                                              run.captures["all_padding_row"], rule.absolute)
    if run.float64 is not None:
        report.float64 = float64_exactness(run, port, cases, rule).to_dict()
    report.precision = precision.section({name: precision.judge_case(case.floors, run.captures[name].order)
                                          for name, case in cases.items()}, port.precision_settings)
    report.determinism = {"torch_tf32_off": port.determinism["torch_tf32_off"],
                          "tf_tf32_off": bool(run.determinism["tf_tf32_off"]),
                          "torch_dropout_off": port.determinism["torch_dropout_off"],
                          "torch_repeat_identical": port.determinism["torch_repeat_identical"],
                          "tf_repeat_identical": bool(run.determinism["tf_repeat_identical"])}
    _gradient_sections(report, run, port)
    report.deviations = list(port.deviations)
    if run.training is not None:
        report.training = compare_training(run.training, port.training).to_dict()
    report.checks = _checks(report, [c for case in cases.values() for c in case.result.outputs])
    report.checks["port_in_legacy_preset"] = port.legacy_preset
    report.checks["l2_normalize_primitive"] = primitives_agree(port.l2_normalized, run.l2_probe[1])
    report.passed = all(report.checks.values())
    return report


def float64_exactness(run: LegacyRun, port: PortRun, cases: Mapping[str, ForwardCase],
                      rule: Tolerance) -> exactness.ExactnessResult:
    """The port's float64 twin against the legacy's float64 run: every output, stage and gradient."""
    result = exactness.ExactnessResult(substitutes=dict(run.float64.substitutes))
    for case, compared in cases.items():
        exactness.compare_case(result, case, port.float64_captures[case], run.float64.captures[case],
                               run.inputs[batch_of(case)], compared.floors.floor, rule.bound_in_floors)
    exactness.compare_real_rows(result, "all_padding_row", port.float64_captures["all_padding_row"],
                                run.float64.captures["all_padding_row"], slice(0, -1))
    exactness.compare_gradients(result, port.float64_gradients, run.float64.gradients)
    return exactness.finish(result)


def _forward_sections(report: ParityReport, cases: dict[str, ForwardCase]) -> None:
    """Outputs of every case; stages of the padded batch; localisation and floors of every case."""
    report.forward = [c.to_dict() for case in cases.values() for c in case.result.outputs]
    report.layers = [c.to_dict() for c in cases["padded"].result.stages]
    report.localisation = {name: {"first_failing_stage": case.result.first_failure,
                                  "unlocated_outputs": case.result.unlocated} for name, case in cases.items()}
    report.first_failing_stage = next((f"{name}: {case.result.first_failure}" for name, case in cases.items()
                                       if case.result.first_failure), None)
    report.stage_errors = {name: stage_errors(case) for name, case in cases.items() if case.introduced is not None}
    report.first_introducing_stage = next((f"{case}: {row['stage']}" for case, rows in report.stage_errors.items()
                                           for row in rows if not row["introduced_passed"]), None)
    report.noise_floors = {name: case.floors.to_dict() for name, case in cases.items()}


def all_padding_row(port: Capture, legacy: Capture, tolerance: float) -> dict[str, Any]:
    """A batch whose last row is padding only: real rows must still agree; say what each side returns there."""
    pt, tf = forward.output_arrays(port), forward.output_arrays(legacy)
    real_rows = {name: compare_arrays(name, pt[name][:-1], tf[name][:-1], tolerance).to_dict() for name in pt}
    padding_row = {name: {"pytorch_finite": bool(np.isfinite(pt[name][-1]).all()),
                          "legacy_finite": bool(np.isfinite(tf[name][-1]).all()),
                          "max_abs_diff": float(np.abs(pt[name][-1] - tf[name][-1]).max())} for name in pt}
    return {"real_rows": real_rows, "padding_row": padding_row,
            "passed": all(c["passed"] for c in real_rows.values())
            and all(v["pytorch_finite"] and v["legacy_finite"] for v in padding_row.values())}


def _gradient_sections(report: ParityReport, run: LegacyRun, port: PortRun) -> None:
    """Census of every mode (recorded TF modes, the port's presets), reachability, gradient parity, backward."""
    raw = {"tf/eager": run.gradients["tf/eager"], "tf/graph": run.gradients["tf/graph"], **port.gradients}
    canonical = list(run.parameters)  # every legacy-preset parameter, once
    references = [raw["pt/legacy"], raw["tf/eager"]]
    expected = {key: port.default_parameters if key == "pt/default" else canonical for key in raw}
    flows = {key: gradients.census(grads, expected[key]) for key, grads in raw.items()}
    # fit shows only the warning's list, which names what is missing out of every variable
    flows["tf/fit"] = gradients.GradientFlow(missing=sorted(set(run.fit_missing)), expected=len(canonical))
    for flow in flows.values():
        gradients.attribute_causes(flow, references)
    order = ("tf/eager", "tf/graph", "tf/fit", "pt/legacy", "pt/default")
    report.gradients = {key: flows[key].to_dict() for key in order}
    report.gradients["tf/fit"]["warning_names"] = list(run.fit_warning)  # as TensorFlow printed them
    report.reachability = {
        **port.reachability,
        "tf/eager": gradients.reachability({objective: run.gradients[f"tf/eager:{objective}"]
                                            for objective in OBJECTIVES}),
    }
    report.gradient_parity = [c.to_dict() for c in gradient_parity.compare_gradients(raw["pt/legacy"], raw["tf/eager"])]
    report.stage_gradient_errors = [c.to_dict() for c in backward.introduced_backward(
        port.backward, run.backward, run.inputs["padded"], gradient_parity.GRADIENT_TOLERANCE)]
    report.first_backward_introducing_stage = next((c["name"] for c in report.stage_gradient_errors
                                                    if not c["passed"]), None)


def primitives_agree(port: np.ndarray, legacy: np.ndarray) -> bool:
    """The port's l2_normalize matches the legacy's on the probe vectors (within 4 float32 ulps of 1)."""
    return bool(np.abs(port - legacy).max() <= 4 * np.finfo(np.float32).eps)


def missing_sets_agree(pt_missing, tf_missing) -> bool:
    """pt/legacy and tf/eager leave the same parameters without a gradient, up to the declared ones."""
    declared = set(gradient_parity.DECLARED_ONE_SIDED)
    return set(pt_missing) - declared == set(tf_missing) - declared


def _checks(report: ParityReport, comparisons: list[Comparison]) -> dict[str, bool]:
    """Every check the exit code depends on. Missing legacy gradients are findings, checked to be the known ones."""
    grads = report.gradients
    return {
        "weights_complete": not (report.weights["tf_only"] or report.weights["pt_only"] or report.weights["mismatched"]),
        "weights_round_trip": report.weights["round_trip_bit_exact"],
        "determinism": all(report.determinism.values()),
        "forward": all(c.passed for c in comparisons),
        "all_padding_row": report.special_cases["all_padding_row"]["passed"],
        "layers": report.first_failing_stage is None and report.first_introducing_stage is None,
        # the port's own float32 error, and its reordered/repeated runs' spread, within PRECISION_BOUND
        # times the legacy's (parity.precision)
        "precision": bool(report.precision["passed"]),
        "spread": bool(report.precision["spread_passed"]),
        "localised": not any(entry["unlocated_outputs"] for entry in report.localisation.values()),
        "tf_graph_and_fit_miss_the_seed_six": set(grads["tf/graph"]["missing"]) == SEED_MISSING
        and set(grads["tf/fit"]["missing"]) == SEED_MISSING,
        "deviations_declared": all(d["passed"] for d in report.deviations),
        "gradient_census_complete": all(not flow["not_covered"] and flow["expected"] for flow in grads.values()),
        "pt_default_misses_none": not (grads["pt/default"]["missing"] or grads["pt/default"]["zero"]
                                       or grads["pt/default"]["nonfinite"]),
        "gradient_parity": all(c["passed"] for c in report.gradient_parity),
        # the parameters without a gradient are the same on both sides (what is declared aside)
        "gradient_missing_sets_agree": missing_sets_agree(grads["pt/legacy"]["missing"], grads["tf/eager"]["missing"]),
        **({"float64_exactness": bool(report.float64["passed"])} if report.float64 is not None else {}),
        "backward_stages": report.first_backward_introducing_stage is None,
        **({"training": bool(report.training.get("passed"))} if report.training is not None else {}),
    }
