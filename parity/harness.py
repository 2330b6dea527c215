"""The parity pipeline: weight bridge -> forward -> layers -> gradients ->
gradient parity -> deviation ledger, returning one `ParityReport`.

One comparison core: `check` compares the port with a `LegacyRun`, the legacy
side as data (`parity.record`), and imports no TensorFlow. The live harness,
`run_parity`, records the legacy in memory and checks; `qarac-parity check`
reads the same `LegacyRun` from a reference bundle.

Formatting lives in `parity.report` (terminal tables, JSON, Markdown) and
`parity.plot` (the plot); this module only computes.
"""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np
import torch

from parity import backward, bridge, exactness, forward, gradient_parity, gradients, ledger, noise
from parity.bundle import BundleError
from parity.capture import Capture, capture_torch
from parity.memory import release_memory
from parity.compare import TINY_TOLERANCE, Comparison, compare_arrays
from parity.sharp import VERSION_KEY, sharpened_weights
from qarac import QaracConfig, QaracTrainerModel
from qarac.base import built_with_weights, skip_init
from qarac.checkpoint import read_roberta_config
from qarac.validation import skip_value_checks

if TYPE_CHECKING:
    from parity.record import LegacyRun

# Measured on roberta-base shapes with random weights (bench/parity_speed.py, worst 3.4e-5):
# twelve layers of float32 from two kernel libraries drift further than two.
ROBERTA_BASE_TOLERANCE = 1e-4


@dataclass
class ParityReport:
    """Everything the harness measured; see README "The parity report" for each field."""

    model: str
    versions: dict[str, str]
    determinism: dict[str, bool] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    forward: list[dict[str, Any]] = field(default_factory=list)
    special_cases: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    first_failing_stage: str | None = None
    localisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    first_introducing_stage: str | None = None
    noise_floors: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_gradient_errors: list[dict[str, Any]] = field(default_factory=list)
    first_backward_introducing_stage: str | None = None
    float64: dict[str, Any] | None = None
    bundle: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    gradients: dict[str, dict[str, Any]] = field(default_factory=dict)
    reachability: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)
    gradient_parity: list[dict[str, Any]] = field(default_factory=list)
    deviations: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] | None = None
    keras3: dict[str, Any] | None = None  # `--keras3`: parity.keras3's section
    checks: dict[str, bool] = field(default_factory=dict)
    passed: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Timer:
    def __init__(self, timings: dict[str, float], progress: Callable[[str], None]):
        self.timings, self.progress = timings, progress

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)


def versions() -> dict[str, str]:
    """The port side's libraries (the legacy side's are recorded with its run, as `legacy_*`)."""
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__}


def determinism_checks(pt_model: QaracTrainerModel, inputs, pt_first: Capture,
                       recorded: Mapping[str, bool]) -> dict[str, bool]:
    """TF32 off and dropout off in the port, read back; a repeated forward is identical to the first;
    with the legacy's own flags as recorded (`tf_tf32_off`, `tf_repeat_identical`)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pt_model.eval()
    pt_again = capture_torch(pt_model, inputs).arrays()
    return {
        "torch_tf32_off": not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32,
        "tf_tf32_off": bool(recorded["tf_tf32_off"]),
        "torch_dropout_off": not any(module.training for module in pt_model.modules()),
        "torch_repeat_identical": all(np.array_equal(pt_again[k], v) for k, v in pt_first.arrays().items()),
        "tf_repeat_identical": bool(recorded["tf_repeat_identical"]),
    }


def build_legacy_pair(model_dir: Path, seed: int = 0) -> tuple[Any, QaracTrainerModel, bridge.WeightMap]:
    """Legacy trainer from the directory; the port's legacy preset holding its weights (bridged)."""
    from legacy_keras.build import build_trainer

    tf_model = build_trainer(model_dir, seed=seed, compile=True)
    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    with skip_init():  # the bridge writes every parameter, or refuses an incomplete map
        pt_legacy = QaracTrainerModel(architecture.legacy()).eval()
    weight_map = bridge.copy_tf_to_pt(tf_model, pt_legacy)
    return tf_model, pt_legacy, weight_map


def build_models(model_dir: Path, seed: int = 0) -> tuple[Any, QaracTrainerModel, QaracTrainerModel, bridge.WeightMap]:
    """`build_legacy_pair` and the port's default preset with the same weights (no pooler)."""
    tf_model, pt_legacy, weight_map = build_legacy_pair(model_dir, seed)
    return tf_model, pt_legacy, default_preset(pt_legacy.config, pt_legacy.state_dict()), weight_map


def default_preset(architecture: QaracConfig, state: Mapping[str, torch.Tensor], share: bool = False) -> QaracTrainerModel:
    """The port's default preset holding the legacy preset's weights `state` (the pooler's left out).

    Args:
        share: hold `state`'s tensors themselves (`qarac.base.built_with_weights`), not copies.
    """
    model, _ = built_with_weights(lambda: QaracTrainerModel(architecture.fixed()),
                                  {k: v for k, v in state.items() if ".pooler." not in k}, share=share)
    return model.eval()


def round_trip_exact(tf_model: Any, pt_model: QaracTrainerModel, weight_map: bridge.WeightMap) -> bool:
    """PT -> TF -> PT reproduces every parameter bit for bit (read back from TF, compared, the port untouched)."""
    bridge.copy_pt_to_tf(pt_model, tf_model, weight_map)
    params = dict(pt_model.named_parameters())
    return all(np.array_equal(value, params[name].detach().cpu().numpy())
               for name, value in bridge.tf_values_as_pt(tf_model, weight_map))


def fixed_tolerance(config: QaracConfig) -> float:
    """The absolute tolerance for comparisons without a noise floor (and `--tolerance`'s old default)."""
    tiny = config.hidden_size <= 64 and int(config.base.get("num_hidden_layers", 12)) <= 2
    return TINY_TOLERANCE if tiny else ROBERTA_BASE_TOLERANCE


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
        legacy, legacy_variants: the legacy's capture of this batch and its own noise (`parity.record`).
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


def build_port(run: LegacyRun, device: str | torch.device = "cpu",
               port: torch.nn.Module | None = None) -> tuple[QaracTrainerModel, QaracTrainerModel]:
    """The port's legacy preset and default preset holding the weights the legacy ran with.

    Args:
        port: a legacy-preset model to load the weights into (strictly) instead of building one.

    Raises:
        BundleError: the recorded weights do not fit the recorded architecture.
        RuntimeError: the recorded weights do not fit `port`.
    """
    architecture = QaracConfig(base=run.meta["model_config"])
    # One writable copy of the recorded weights, held by both presets (no other copy is made).
    state = {name: torch.from_numpy(np.array(value)) for name, value in run.weights.items()}
    if port is not None:
        port.load_state_dict(state, strict=True)
        return port.to(device).eval(), default_preset(architecture, state, share=True).to(device).eval()
    try:
        pt_legacy, _ = built_with_weights(lambda: QaracTrainerModel(architecture.legacy()), state, share=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:400]
        raise BundleError(f"the recorded weights do not fit the recorded architecture: {detail}") from None
    pt_default = default_preset(architecture, state, share=True)
    return pt_legacy.to(device).eval(), pt_default.to(device).eval()


def run_parity(model_dir: Path, tolerance: float | None = None, seed: int = 0, batch_size: int = 4,
               train_steps: int = 0, progress: Callable[[str], None] = lambda stage: None,
               fit_probe: Any = None, keras3: bool = False) -> ParityReport:
    """The live harness: record the legacy on one RoBERTa directory, in memory, then `check` the port.

    Args:
        fit_probe: the `fit` probe, when the caller started it already (`parity.fit_probe`).
        keras3: also run QARAC on Keras 3's three backends against the same recording (`parity.keras3`).
    """
    from parity.record import record_legacy

    start = time.perf_counter()
    run = record_legacy(model_dir, seed, batch_size, train_steps, progress, fit_probe)
    release_memory()  # the legacy model's gigabytes go back before the port's models are built
    report = check(run, tolerance, progress=progress)
    if keras3:
        from parity.keras3 import add_keras3

        add_keras3(report, run, progress=progress)
    report.timings_s = {**{f"record {k}": v for k, v in run.timings_s.items()}, **report.timings_s,
                        "total": round(time.perf_counter() - start, 3)}
    return report


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
    with timer.stage("determinism"), backward.recorded_arguments(pt_legacy) as stage_calls:
        report.determinism = determinism_checks(pt_legacy, inputs["padded"], runs["padded"].pt, run.determinism)
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
            from parity.training import check_training

            report.training = check_training(run).to_dict()
    report.checks = _checks(report, [c for case in runs.values() for c in case.result.outputs])
    report.checks["port_in_legacy_preset"] = legacy_preset
    from parity.mutations import primitives_agree

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
                                            for objective in gradients.OBJECTIVES}),
    }
    report.gradient_parity = [c.to_dict() for c in gradient_parity.compare_gradients(raw["pt/legacy"], raw["tf/eager"])]
    progress("backward per stage")
    report.stage_gradient_errors = [c.to_dict() for c in backward.introduced_backward(
        pt_legacy, run.backward, inputs, gradient_parity.GRADIENT_TOLERANCE, stage_calls)]
    report.first_backward_introducing_stage = next((c["name"] for c in report.stage_gradient_errors
                                                    if not c["passed"]), None)


SEED_MISSING = {
    "question_encoder.encoder.pooler.dense.weight", "question_encoder.encoder.pooler.dense.bias",
    "decoder.decoder.pooler.dense.weight", "decoder.decoder.pooler.dense.bias",
    "question_encoder.head.local_projection", "answer_encoder.head.local_projection",
}


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
