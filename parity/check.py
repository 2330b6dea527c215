"""The comparator: the port checked against a legacy run (`parity.results.LegacyRun`), one `ParityReport`.

weight bridge -> forward -> layers -> gradients -> gradient parity -> deviation
ledger. `check` takes the legacy side as data, whether just recorded
(`parity.live`) or read from a reference bundle (`parity.reference`), runs the
port (`parity.port`) and compares; it imports no TensorFlow (tests/test_layout.py).
Formatting lives in `parity.report` and `parity.plot`; this module only computes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from parity import backward, exactness, forward, gradient_parity, gradients, ledger, noise
from parity.capture import capture_torch
from parity.compare import Comparison, compare_arrays
from parity.port import build_port, determinism_checks, fixed_tolerance, primitives_agree, versions
from parity.results import LegacyRun, ParityReport
from parity.sharp import VERSION_KEY, sharpened_weights
from parity.stages import Capture
from parity.training import check_training
from qarac.losses import OBJECTIVES
from qarac.validation import skip_value_checks

# The six variables the original's traced `fit` leaves without a gradient (its "Gradients do not
# exist" warning): the RoBERTa poolers and the pooling heads' local projections.
SEED_MISSING = {
    "question_encoder.encoder.pooler.dense.weight", "question_encoder.encoder.pooler.dense.bias",
    "decoder.decoder.pooler.dense.weight", "decoder.decoder.pooler.dense.bias",
    "question_encoder.head.local_projection", "answer_encoder.head.local_projection",
}


class _Timer:
    def __init__(self, timings: dict[str, float], progress: Callable[[str], None]):
        self.timings, self.progress = timings, progress

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)


@dataclass
class ForwardCase:
    """One batch, run once per side: the comparison, both captures, the floors, the introduced errors."""

    result: forward.CaseResult
    pt: Capture
    legacy: Capture
    floors: noise.NoiseFloors
    introduced: list[Comparison] | None


def forward_case(pt_model, legacy: Capture, legacy_variants: Mapping[str, Mapping[str, float]], inputs, case: str,
                 tolerance: float | None, fallback: float, introduced: bool = True, seed: int = 0,
                 reorder: bool = True, legacy64: Capture | None = None) -> ForwardCase:
    """Every comparison of one batch from one forward of the port against the legacy's capture.

    Args:
        legacy, legacy_variants: the legacy's capture of this batch and its own noise (`parity.results.LegacyRun`).
        tolerance: a fixed absolute tolerance (`--tolerance`), or None to judge in noise-floor units.
        fallback: the absolute tolerance recorded where a value is judged by its floor.
        reorder: measure the port's reordering noise variants (`parity.noise.REORDER_VARIANTS`).
        legacy64: the legacy's float64 capture of this batch (its float32 error joins the floors).
    """
    pt = capture_torch(pt_model, inputs)
    floors = noise.measure_floors(pt_model, inputs, pt, legacy, legacy_variants, seed, reorder, legacy64)
    bound = noise.FLOOR_BOUND if tolerance is None else None
    absolute = tolerance if tolerance is not None else fallback
    result = forward.compare_captures(pt, legacy, inputs, case, absolute, floors.floor, bound)
    fed = forward.introduced_errors(pt_model, legacy, inputs, absolute, floors.floor, bound) if introduced else None
    return ForwardCase(result, pt, legacy, floors, fed)


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


def check(run: LegacyRun, tolerance: float | None = None, device: str | torch.device = "cpu",
          progress: Callable[[str], None] = lambda stage: None, port: torch.nn.Module | None = None) -> ParityReport:
    """Compare the port with a recorded (or just recorded) legacy run; imports no TensorFlow.

    The port's value checks (finite vectors handed to the decoder, ...) are off inside: a port that
    produces NaN or inf gets its full report, naming the first stage where they appear.

    Args:
        tolerance: None (default) judges every forward value against `parity.noise.FLOOR_BOUND`
            times its measured noise floor; a number is a fixed absolute tolerance instead.
        device: where the port runs ("cpu", "cuda"); TF32 is turned off and read back there.
        port: a model in the legacy preset with `QaracTrainerModel`'s parameter names to check instead
            of the one built from the run (`parity.testing`); the run's weights are loaded into it.
    """
    with skip_value_checks():
        return _check(run, tolerance, device, progress, port)


def _check(run: LegacyRun, tolerance: float | None, device: str | torch.device,
           progress: Callable[[str], None], port: torch.nn.Module | None) -> ParityReport:
    report = ParityReport(model=str(run.meta["model"]), versions={**versions(), **{
        f"legacy_{k}": v for k, v in run.meta["legacy_versions"].items()}})
    timer = _Timer(report.timings_s, progress)
    start = time.perf_counter()
    seed = int(run.meta["seed"])
    with timer.stage("build"):
        pt_legacy, pt_default = build_port(run, device, port)
        inputs = {case: {name: tokens.to(device) for name, tokens in batch.items()} for case, batch in run.inputs.items()}
        targets = {name: value.to(device) for name, value in run.targets.items()}
    fallback = tolerance if tolerance is not None else fixed_tolerance(pt_legacy.config)
    bound = noise.FLOOR_BOUND if tolerance is None else None
    report.verdict = {"mode": "fixed tolerance" if tolerance is not None else "noise floor",
                      "bound_in_floors": None if tolerance is not None else noise.FLOOR_BOUND,
                      "absolute_tolerance": tolerance}
    report.weights = dict(run.weight_summary)
    legacy64 = run.float64.captures if run.float64 is not None else {}
    with timer.stage("forward"):
        runs = {"padded": forward_case(pt_legacy, run.captures["padded"], run.legacy_floors["padded"],
                                       inputs["padded"], "padded", tolerance, fallback, seed=seed,
                                       legacy64=legacy64.get("padded"))}
        # The reorderings are repeated on the other batches only where they moved something here.
        reorder = runs["padded"].floors.reorder_moved()
        for case in ("unpadded", "max_length"):
            runs[case] = forward_case(pt_legacy, run.captures[case], run.legacy_floors[case], inputs[case], case,
                                      tolerance, fallback, introduced=False, seed=seed, reorder=reorder,
                                      legacy64=legacy64.get(case))
        # the nonlinearities exercised, on the set of the version the legacy's run used (parity.sharp)
        with sharpened_weights(pt_legacy, run.meta[VERSION_KEY]):
            runs["sharp"] = forward_case(pt_legacy, run.captures["sharp"], run.legacy_floors["sharp"],
                                         inputs["padded"], "sharp", tolerance, fallback, seed=seed, reorder=reorder,
                                         legacy64=legacy64.get("sharp"))
        _forward_sections(report, runs)
        report.special_cases["all_padding_row"] = _all_padding_row(pt_legacy, run.captures["all_padding_row"],
                                                                   inputs["all_padding_row"], fallback)
    if run.float64 is not None:
        with timer.stage("float64"):
            report.float64 = float64_exactness(run, pt_legacy, runs, inputs, targets, bound).to_dict()
    noise.release_twins(pt_legacy)
    stage_calls: dict[str, tuple[tuple, dict]] = {}  # the repeated forward's stage arguments, for the backward
    with timer.stage("determinism"):
        report.determinism = determinism_checks(pt_legacy, inputs["padded"], runs["padded"].pt, run.determinism,
                                                stage_calls)
    with timer.stage("gradients"):
        _gradient_sections(report, run, pt_legacy, pt_default, inputs["padded"], targets, stage_calls,
                           lambda step: progress(f"gradients: {step}"))
    legacy_preset = bool(getattr(pt_legacy.config, "is_legacy", False))
    with timer.stage("deviations"):
        # The ledger switches each legacy option off a legacy-preset port; a port given in another
        # preset (`parity.testing`) has no ledger, and fails `port_in_legacy_preset`.
        report.deviations = ([d.to_dict() for d in ledger.measure_deviations(pt_legacy, inputs["padded"], targets)]
                             if legacy_preset else [])
    if run.training is not None:
        with timer.stage("training"):
            report.training = check_training(run).to_dict()
    report.checks = _checks(report, [c for case in runs.values() for c in case.result.outputs])
    report.checks["port_in_legacy_preset"] = legacy_preset
    report.checks["l2_normalize_primitive"] = primitives_agree(run.l2_probe)
    report.passed = all(report.checks.values())
    report.timings_s["total"] = round(time.perf_counter() - start, 3)
    return report


def float64_exactness(run: LegacyRun, pt_legacy, runs: Mapping[str, ForwardCase], inputs, targets,
                      bound: float | None) -> exactness.ExactnessResult:
    """The port's float64 twin against the legacy's float64 run: every output, stage and gradient.

    The twin's forwards of the compared batches were taken for the floors (`NoiseFloors.port_float64`);
    the all-padding row's and the gradients of the total loss are taken here.
    """
    result = exactness.ExactnessResult(substitutes=dict(run.float64.substitutes))
    for case, forward_run in runs.items():
        exactness.compare_case(result, case, forward_run.floors.port_float64, run.float64.captures[case],
                               inputs["padded" if case == "sharp" else case], forward_run.floors.floor, bound)
    port = noise.capture_float64(pt_legacy, inputs["all_padding_row"])
    exactness.compare_real_rows(result, "all_padding_row", port, run.float64.captures["all_padding_row"],
                                slice(0, -1))
    with noise.float64_default():
        port_gradients = gradients.torch_gradients(noise.float64_twin(pt_legacy), inputs["padded"], targets)
    exactness.compare_gradients(result, port_gradients, run.float64.gradients)
    return exactness.finish(result)


def _forward_sections(report: ParityReport, runs: dict[str, ForwardCase]) -> None:
    """Outputs of every case; stages of the padded batch; localisation and floors of every case."""
    report.forward = [c.to_dict() for run in runs.values() for c in run.result.outputs]
    report.layers = [c.to_dict() for c in runs["padded"].result.stages]
    report.localisation = {case: {"first_failing_stage": run.result.first_failure,
                                  "unlocated_outputs": run.result.unlocated} for case, run in runs.items()}
    report.first_failing_stage = next((f"{case}: {run.result.first_failure}" for case, run in runs.items()
                                       if run.result.first_failure), None)
    report.stage_errors = {case: stage_errors(run) for case, run in runs.items() if run.introduced is not None}
    report.first_introducing_stage = next((f"{case}: {row['stage']}" for case, rows in report.stage_errors.items()
                                           for row in rows if not row["introduced_passed"]), None)
    report.noise_floors = {case: run.floors.to_dict() for case, run in runs.items()}


def _all_padding_row(pt_model, legacy: Capture, inputs, tolerance) -> dict[str, Any]:
    """A batch whose last row is padding only: real rows must still agree; say what each side returns there."""
    pt, tf = forward.output_arrays(capture_torch(pt_model, inputs)), forward.output_arrays(legacy)
    real_rows = {name: compare_arrays(name, pt[name][:-1], tf[name][:-1], tolerance).to_dict() for name in pt}
    padding_row = {name: {"pytorch_finite": bool(np.isfinite(pt[name][-1]).all()),
                          "legacy_finite": bool(np.isfinite(tf[name][-1]).all()),
                          "max_abs_diff": float(np.abs(pt[name][-1] - tf[name][-1]).max())} for name in pt}
    return {"real_rows": real_rows, "padding_row": padding_row,
            "passed": all(c["passed"] for c in real_rows.values())
            and all(v["pytorch_finite"] and v["legacy_finite"] for v in padding_row.values())}


def _gradient_sections(report, run: LegacyRun, pt_legacy, pt_default, inputs, targets,
                       stage_calls: Mapping[str, tuple[tuple, dict]] | None = None,
                       progress: Callable[[str], None] = lambda step: None) -> None:
    """Census of every mode (recorded TF modes, live PyTorch presets), reachability, gradient parity, backward."""
    raw = {"tf/eager": run.gradients["tf/eager"], "tf/graph": run.gradients["tf/graph"]}
    torch_reachability = {}
    for mode, model in (("pt/legacy", pt_legacy), ("pt/default", pt_default)):
        progress(f"{mode} (total and per objective)")
        raw[mode], torch_reachability[mode] = gradients.torch_gradients_and_reachability(model, inputs, targets)
    canonical = list(run.parameters)  # every legacy-preset parameter, once
    fit_missing = set(run.fit_missing)
    references = [raw["pt/legacy"], raw["tf/eager"]]
    expected = {key: [name for name, _ in pt_default.named_parameters()] if key == "pt/default" else canonical
                for key in raw}
    flows = {key: gradients.census(grads, expected[key]) for key, grads in raw.items()}
    # fit shows only the warning's list, which names what is missing out of every variable
    flows["tf/fit"] = gradients.GradientFlow(missing=sorted(fit_missing), expected=len(canonical))
    for flow in flows.values():
        gradients.attribute_causes(flow, references)
    order = ("tf/eager", "tf/graph", "tf/fit", "pt/legacy", "pt/default")
    report.gradients = {key: flows[key].to_dict() for key in order}
    report.gradients["tf/fit"]["warning_names"] = list(run.fit_warning)  # as TensorFlow printed them
    report.reachability = {
        **torch_reachability,
        "tf/eager": gradients.reachability({objective: run.gradients[f"tf/eager:{objective}"]
                                            for objective in OBJECTIVES}),
    }
    report.gradient_parity = [c.to_dict() for c in gradient_parity.compare_gradients(raw["pt/legacy"], raw["tf/eager"])]
    progress("backward per stage")
    report.stage_gradient_errors = [c.to_dict() for c in backward.introduced_backward(
        pt_legacy, run.backward, inputs, gradient_parity.GRADIENT_TOLERANCE, stage_calls)]
    report.first_backward_introducing_stage = next((c["name"] for c in report.stage_gradient_errors
                                                    if not c["passed"]), None)


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
