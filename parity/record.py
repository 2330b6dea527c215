"""The legacy side of the harness, run once and kept as data: a `LegacyRun`.

Everything the parity checks need from TensorFlow is computed here, in one
place: the legacy's captured forwards (outputs and every stage) on each batch,
its own float32 noise, its gradients in eager and graph mode, the variables its
`fit` warns about, its per-stage backward, its `l2_normalize` on probe vectors
and, optionally, K steps of its training. `parity.harness.check` compares the
port with a `LegacyRun` and needs no TensorFlow; a live `qarac-parity` run is
`check(record_legacy(...))`, and `qarac-parity record` writes the same
`LegacyRun` to a reference bundle (`to_bundle` / `from_bundle`, files in
`parity.bundle`), so a live and a recorded run are compared by the same code.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from parity.backward import LegacyBackward
from parity.bundle import SCHEMA_VERSION, Bundle, BundleError, check_same_model, read_bundle, vocabulary_sha256, write_bundle
from parity.capture import Capture
from parity.sharp import VERSION_KEY, version_of_bundle
from qarac.batch import INPUT_NAMES, TokenBatch

# The batches every run compares on, in the order they are recorded.
CASES = ("padded", "unpadded", "max_length", "all_padding_row")
# Captured forwards: each batch with the model's weights, and the padded batch with the
# sharpened weight set (`parity.sharp`).
CAPTURES = (*CASES, "sharp")
OBJECTIVES = ("encode_decode", "question_answering", "reasoning", "consistency")
# The version of the noise-floor inputs a bundle holds (`to_bundle`): 2 adds the legacy's float64 run.
NOISE_FLOORS_VERSION = 2


@dataclass
class LegacyTraining:
    """K legacy training steps on the original's pipeline (see `parity.training`).

    Attributes:
        settings: steps, batch size, seed, learning rate, batch indices and ragged batches skipped.
        batches: per step, the legacy pipeline's arrays: `x/<input>/input_ids|attention_mask`,
            `y/encode_decode`, `y/reasoning`, `y/consistency`.
        eager / graph: per step, the losses (`total` and each objective) of `fit(run_eagerly=True)`
            and of the traced `fit`.
    """

    settings: dict[str, Any]
    batches: list[dict[str, np.ndarray]]
    eager: list[dict[str, float]]
    graph: list[dict[str, float]]


@dataclass
class LegacyFloat64:
    """The legacy run a second time in float64: the same weights (float32 values) and batches.

    Attributes:
        captures: case -> the float64 legacy's captured forward (`CAPTURES`, the sharpened set included).
        gradients: the float64 legacy's eager gradients of the total loss, by canonical PyTorch name (None: none).
        substitutes: part -> what replaced it, where the legacy as built does not run in float64
            (`parity.tf_side.FLOAT64_SUBSTITUTES`).
    """

    captures: dict[str, Capture]
    gradients: dict[str, np.ndarray | None]
    substitutes: dict[str, str]


@dataclass
class LegacyRun:
    """What the legacy computed, as plain data.

    Attributes:
        meta: model (directory), legacy_versions, seed, batch_size, model_config (the RoBERTa
            architecture), vocabulary_sha256, and the sharpened weight set's version (`parity.sharp.VERSION_KEY`).
        weights: every parameter of the port's legacy preset after the weight bridge, by PyTorch name.
        weight_summary: the bridge's summary and whether PT -> TF -> PT is bit-exact.
        inputs: case -> trainer input -> tokens; targets: the padded batch's targets.
        captures: case -> the legacy's captured forward (`CAPTURES`).
        legacy_floors: case -> value -> noise variant -> the legacy's own difference.
        determinism: `tf_tf32_off`, `tf_repeat_identical`.
        gradients: "tf/eager", "tf/eager:<objective>", "tf/graph" -> PyTorch name -> gradient or None
            (read from a bundle, a per-objective entry is its largest magnitude, (1,): all reachability reads).
        fit_warning: the variables TensorFlow's `fit` warning names, as it printed them.
        parameters: every parameter of the legacy preset, once (canonical PyTorch names).
        fit_missing: the fit warning's variables, by canonical PyTorch name.
        backward: the legacy's per-stage gradients of the total loss (`parity.backward`).
        l2_probe: (vectors, the legacy's `tf.math.l2_normalize` of them).
        training: K legacy training steps, or None.
        timings_s: seconds each part of the recording took.
        float64: the legacy run again in float64 (`LegacyFloat64`), or None.
    """

    meta: dict[str, Any]
    weights: dict[str, np.ndarray]
    weight_summary: dict[str, Any]
    inputs: dict[str, dict[str, TokenBatch]]
    targets: dict[str, Any]
    captures: dict[str, Capture]
    legacy_floors: dict[str, dict[str, dict[str, float]]]
    determinism: dict[str, bool]
    gradients: dict[str, dict[str, np.ndarray | None]]
    fit_warning: list[str]
    parameters: list[str]
    fit_missing: list[str]
    backward: LegacyBackward
    l2_probe: tuple[np.ndarray, np.ndarray]
    training: LegacyTraining | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    float64: LegacyFloat64 | None = None


def legacy_versions() -> dict[str, str]:
    import tensorflow as tf
    import tf_keras
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__, "transformers": transformers.__version__, "numpy": np.__version__}


def record_legacy(model_dir: Path, seed: int = 0, batch_size: int = 4, train_steps: int = 0,
                  progress: Callable[[str], None] = lambda stage: None, fit_probe: Any = None) -> LegacyRun:
    """Run the legacy side of every check once (needs the `legacy` extra).

    Args:
        fit_probe: the `fit` probe, if the caller started it already (`parity.fit_probe`), for
            this model directory and seed.
    """
    from parity import gradient_parity, noise
    from parity.capture import capture_keras
    from parity.fit_probe import finish_fit_probe, start_fit_probe
    from parity.harness import build_legacy_pair, round_trip_exact
    from parity.inputs import all_padding_row, max_length_batch, sample_batch, tokenizer_for, unpadded
    from parity.mutations import legacy_l2_probe
    from parity.sharp import CURRENT_VERSION, sharpened
    from parity.tf_side import disable_tf32, legacy_padded_pass, tf_gradients

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    if fit_probe is None:  # beside the rest: tracing `fit` is the slowest step
        fit_probe = start_fit_probe(model_dir, seed)
    progress("legacy: build")
    tf_model, pt_legacy, weight_map = build_legacy_pair(model_dir, seed)  # `check` builds the default preset
    batch = sample_batch(model_dir, pt_legacy.config, batch_size, seed)
    inputs = {"padded": batch.inputs, "unpadded": unpadded(batch).inputs,
              "max_length": max_length_batch(pt_legacy.config, seed), "all_padding_row": all_padding_row(batch).inputs}
    weights = {name: value.detach().numpy().copy() for name, value in pt_legacy.state_dict().items()}
    summary = {**weight_map.summary(), "round_trip_bit_exact": round_trip_exact(tf_model, pt_legacy, weight_map)}
    lap("build")
    progress("legacy: padded batch (forward, gradients, backward per stage)")
    tf32_off = disable_tf32()
    to_pt = lambda grads: gradient_parity.to_pt_names(grads, weight_map)  # noqa: E731
    # One forward serves the padded capture, the eager gradients and the per-stage backward. Per
    # objective only reachability is read: each gradient's largest magnitude is kept, not four more
    # copies of the weights' size (roberta-base shapes: 4 GB).
    padded, eager, legacy_backward = legacy_padded_pass(tf_model, batch.inputs, batch.targets,
                                                        reduce=largest_magnitudes)
    grads = {"tf/eager": to_pt(eager.pop(None)),
             **{f"tf/eager:{objective}": to_pt(eager.pop(objective)) for objective in OBJECTIVES}}
    lap("padded pass")
    progress("legacy: forward")
    captures = {"padded": padded, **{case: capture_keras(tf_model, inputs[case]) for case in CASES if case != "padded"}}
    floors = {"padded": noise.legacy_floor_variants(tf_model, inputs["padded"], captures["padded"], seed)}
    # The reordering is repeated on the other batches only where it moved something here (parity.noise).
    reorder = noise.reorder_moved(floors["padded"])
    for case in ("unpadded", "max_length"):
        floors[case] = noise.legacy_floor_variants(tf_model, inputs[case], captures[case], seed, reorder)
    with sharpened(pt_legacy, tf_model, weight_map, CURRENT_VERSION):
        captures["sharp"] = capture_keras(tf_model, inputs["padded"])
        floors["sharp"] = noise.legacy_floor_variants(tf_model, inputs["padded"], captures["sharp"], seed, reorder)
    again = capture_keras(tf_model, inputs["padded"]).arrays()
    determinism = {"tf_tf32_off": tf32_off,
                   "tf_repeat_identical": all(np.array_equal(again[k], v) for k, v in captures["padded"].arrays().items())}
    lap("forward")
    progress("legacy: gradients tf/graph (Grappler off: see parity.tf_side.tf_gradients)")
    grads["tf/graph"] = to_pt(tf_gradients(tf_model, batch.inputs, batch.targets, "graph", optimize_graph=False))
    progress("legacy: gradients tf/fit (the fit probe)")
    fit_warning = finish_fit_probe(fit_probe)
    lap("gradients")
    progress("legacy: float64 run (forward of every batch, eager gradients)")
    del tf_model, again  # the float32 legacy's memory goes back before the float64 one is built
    float64 = record_float64(model_dir, seed, pt_legacy, weight_map, inputs, batch.targets, CURRENT_VERSION)
    lap("float64")
    training = None
    if train_steps:
        progress("legacy: training")
        from parity.training import record_legacy_training

        training, _ = record_legacy_training(model_dir, train_steps, batch_size, seed, expected_weights=weights)
        lap("training")
    tokenizer = tokenizer_for(model_dir, pt_legacy.config)
    meta = {"model": str(model_dir), "legacy_versions": legacy_versions(), "seed": seed, "batch_size": batch_size,
            "model_config": dict(pt_legacy.config.base), "vocabulary_sha256": vocabulary_sha256(tokenizer.get_vocab()),
            VERSION_KEY: CURRENT_VERSION}
    canonical = [entry.pt_name for entry in weight_map.entries]
    fit_missing = sorted(weight_map.tf_to_pt()[name] for name in fit_warning)
    return LegacyRun(meta, weights, summary, inputs, batch.targets, captures, floors, determinism, grads,
                     fit_warning, canonical, fit_missing, legacy_backward, legacy_l2_probe(), training, timings,
                     float64)


def record_float64(model_dir: Path, seed: int, pt_legacy: Any, weight_map: Any,
                   inputs: Mapping[str, Any], targets: Mapping[str, Any], sharpened_set: int) -> LegacyFloat64:
    """The legacy built in float64 with `pt_legacy`'s weights: every case's forward (the sharpened case
    on the weight set of version `sharpened_set`, `parity.sharp`) and the padded batch's eager gradients
    of the total loss (`parity.tf_side.legacy_float64`)."""
    from parity import gradient_parity
    from parity.capture import capture_keras
    from parity.memory import release_memory
    from parity.sharp import sharpened
    from parity.tf_side import FLOAT64_SUBSTITUTES, legacy_float64, tf_gradients

    release_memory()
    model = legacy_float64(model_dir, seed, pt_legacy, weight_map)
    captures = {case: capture_keras(model, inputs[case]) for case in CASES}
    with sharpened(pt_legacy, model, weight_map, sharpened_set):
        captures["sharp"] = capture_keras(model, inputs["padded"])
    grads = gradient_parity.to_pt_names(tf_gradients(model, inputs["padded"], targets, "eager"), weight_map)
    del model
    release_memory()
    return LegacyFloat64(captures, grads, dict(FLOAT64_SUBSTITUTES))


# --- bundles ----------------------------------------------------------------------------------

def _tokens(prefix: str, tokens: TokenBatch, bundle: Bundle, what: str) -> None:
    bundle.add(f"{prefix}/input_ids", tokens.input_ids.numpy(), f"{what}: token ids (B, T)")
    bundle.add(f"{prefix}/attention_mask", tokens.attention_mask.numpy(), f"{what}: 1 for tokens, 0 for padding (B, T)")


def _gradients(prefix: str, grads: Mapping[str, np.ndarray | None], bundle: Bundle, what: str) -> list[str]:
    """Add the gradients that exist; return the names whose gradient is None."""
    missing = []
    for name, value in sorted(grads.items()):
        if value is None:
            missing.append(name)
        else:
            bundle.add(f"{prefix}/{name}", value, f"{what} of parameter {name}")
    return missing


def largest_magnitudes(grads: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """Per-objective gradients serve only reachability (does an objective reach a parameter?):
    each one's largest magnitude is kept, (1,), not the whole array (4 x the weights' size)."""
    return {name: None if value is None else np.abs(value).max(initial=0.0).reshape(1)
            for name, value in grads.items()}


def _what(mode: str) -> str:
    if ":" in mode:
        return f"legacy {mode.replace(':', ' gradient of the ')} loss: largest magnitude (1,)"
    return f"legacy {mode} gradient of the total loss"


def add_float64(bundle: Bundle, float64: LegacyFloat64) -> dict[str, Any]:
    """Add the float64 run's arrays to `bundle` (`legacy64/`, `gradients64/`); return its JSON result."""
    for case, capture in float64.captures.items():
        for name, value in capture.arrays().items():
            if not name.startswith("stage_in/"):  # compared are outputs and stages: their inputs are not kept
                bundle.add(f"legacy64/{case}/{name}", value, f"float64 legacy forward, {case} batch: {name}")
    return {"gradients_missing": _gradients("gradients64/tf/eager", float64.gradients, bundle,
                                            "float64 legacy tf/eager gradient of the total loss"),
            "substitutes": float64.substitutes,
            "capture_orders": {case: c.order for case, c in float64.captures.items()}}


def to_bundle(run: LegacyRun, model_files: Path | None = None) -> Bundle:
    """The run as a reference bundle (arrays, JSON results, and `model_files`: config and tokenizer)."""
    bundle = Bundle(meta=dict(run.meta), model_dir=model_files)
    for name, value in run.weights.items():
        bundle.add(f"weights/{name}", value, "parameter of the port's legacy preset after the weight bridge")
    for case, inputs in run.inputs.items():
        for name, tokens in inputs.items():
            _tokens(f"inputs/{case}/{name}", tokens, bundle, f"{case} batch, {name}")
    for name in ("encode_decode", "reasoning"):
        _tokens(f"targets/{name}", run.targets[name], bundle, f"padded batch, {name} target")
    bundle.add("targets/consistency", np.asarray(run.targets["consistency"]), "padded batch, consistency labels (B,)")
    for case, capture in run.captures.items():
        for name, value in capture.arrays().items():
            bundle.add(f"legacy/{case}/{name}", value, f"legacy forward, {case} batch: {name}")
    missing = {mode: _gradients(f"gradients/{mode}", grads, bundle, _what(mode))
               for mode, grads in run.gradients.items()}
    float64 = None if run.float64 is None else add_float64(bundle, run.float64)
    for kind in ("stage_inputs", "upstream", "input_gradients"):
        for name, value in getattr(run.backward, kind).items():
            bundle.add(f"backward/{kind}/{name}", value, f"legacy backward, padded batch: {kind} of stage {name}")
    bundle.add("l2_probe/vectors", run.l2_probe[0], "probe vectors (13, 8), squared norms 1e-20..1e4")
    bundle.add("l2_probe/legacy", run.l2_probe[1], "tf.math.l2_normalize of the probe vectors")
    training = None
    if run.training is not None:
        for step, arrays in enumerate(run.training.batches):
            for name, value in arrays.items():
                bundle.add(f"training/{step}/{name}", value, f"legacy pipeline batch of training step {step + 1}: {name}")
        training = {"settings": run.training.settings, "eager": run.training.eager, "graph": run.training.graph}
    bundle.results = {
        "weight_summary": run.weight_summary, "determinism": run.determinism, "fit_warning": run.fit_warning,
        "parameters": run.parameters, "fit_missing": run.fit_missing,
        "gradients_missing": missing, "capture_orders": {case: c.order for case, c in run.captures.items()},
        "backward_order": run.backward.order, "training": training, "record_timings_s": run.timings_s,
        # Versioned: what the legacy side contributes to the noise floors (parity.noise). Version 2: the
        # legacy's float32 error against its float64 run (read from `legacy64/`) is part of every floor.
        "noise_floors": {"schema_version": NOISE_FLOORS_VERSION, "variants": ["permuted_batch", "float64"], "legacy": run.legacy_floors},
        "float64": float64,
    }
    return bundle


def _read_tokens(bundle: Bundle, prefix: str) -> TokenBatch:
    return TokenBatch(torch.from_numpy(bundle.array(f"{prefix}/input_ids").copy()),
                      torch.from_numpy(bundle.array(f"{prefix}/attention_mask").copy()))


def _read_capture(bundle: Bundle, case: str, order: list[str], prefix: str = "legacy") -> Capture:
    arrays = bundle.group(f"{prefix}/{case}")
    capture = Capture(order=list(order))
    for name, value in arrays.items():
        kind, _, key = name.partition("/")
        {"output": capture.outputs, "stage_in": capture.stage_inputs, "stage_out": capture.stage_outputs}[kind][key] = value
    for stage in order:
        capture.stage_inputs.setdefault(stage, None)  # embeddings take token ids: no float input recorded
    return capture


def from_bundle(bundle: Bundle) -> LegacyRun:
    """The `LegacyRun` a bundle holds.

    Raises:
        BundleError: the bundle lacks something a check needs.
    """
    results = bundle.results
    try:
        orders, missing = results["capture_orders"], results["gradients_missing"]
        floors = results["noise_floors"]["legacy"]
        floors_version = results["noise_floors"]["schema_version"]
    except (KeyError, TypeError) as error:
        raise BundleError(f"bundle {bundle.directory} lacks the result {error} in its manifest") from None
    if floors_version != NOISE_FLOORS_VERSION:
        raise BundleError(f"bundle {bundle.directory} holds noise floors of version {floors_version!r}; this qarac "
                          f"reads version {NOISE_FLOORS_VERSION}: record the bundle again with this version")
    weights = bundle.group("weights")
    inputs = {case: {name: _read_tokens(bundle, f"inputs/{case}/{name}") for name in INPUT_NAMES} for case in CASES}
    targets: dict[str, Any] = {name: _read_tokens(bundle, f"targets/{name}") for name in ("encode_decode", "reasoning")}
    targets["consistency"] = torch.from_numpy(bundle.array("targets/consistency").copy())
    gradients = {}
    for mode, names in missing.items():
        present = bundle.group(f"gradients/{mode}")
        gradients[mode] = {**present, **{name: None for name in names}}
    kinds = {kind: bundle.group(f"backward/{kind}") for kind in ("stage_inputs", "upstream", "input_gradients")}
    legacy_backward = LegacyBackward(order=list(results["backward_order"]), **kinds)
    training = None
    if results.get("training"):
        recorded = results["training"]
        steps = len(recorded["eager"])
        training = LegacyTraining(recorded["settings"], [bundle.group(f"training/{step}") for step in range(steps)],
                                  recorded["eager"], recorded["graph"])
    try:  # a bundle built in memory is written as this schema
        sharpened_set = version_of_bundle(bundle.meta, bundle.schema_version or SCHEMA_VERSION)
    except ValueError as error:
        raise BundleError(f"bundle {bundle.directory}: {error}") from None
    return LegacyRun({**bundle.meta, VERSION_KEY: sharpened_set}, weights, results["weight_summary"], inputs, targets,
                     {case: _read_capture(bundle, case, orders[case]) for case in CAPTURES}, floors,
                     results["determinism"], gradients, results["fit_warning"], results["parameters"],
                     results["fit_missing"], legacy_backward,
                     (bundle.array("l2_probe/vectors"), bundle.array("l2_probe/legacy")), training,
                     results.get("record_timings_s", {}), _read_float64(bundle, results.get("float64")))


def _read_float64(bundle: Bundle, recorded: Mapping[str, Any] | None) -> LegacyFloat64 | None:
    """The bundle's float64 run of the legacy, or None where it holds none."""
    if not recorded:
        return None
    try:
        orders, missing = recorded["capture_orders"], recorded["gradients_missing"]
        substitutes = dict(recorded["substitutes"])
    except (KeyError, TypeError) as error:
        raise BundleError(f"bundle {bundle.directory} lacks the float64 result {error} in its manifest") from None
    captures = {case: _read_capture(bundle, case, orders[case], "legacy64") for case in CAPTURES}
    gradients = {**bundle.group("gradients64/tf/eager"), **{name: None for name in missing}}
    return LegacyFloat64(captures, gradients, substitutes)


def model_files(model_dir: Path, destination: Path) -> Path:
    """Copy the HF files of `model_dir` a bundle keeps besides the weights (config.json, tokenizer files)."""
    destination.mkdir(parents=True, exist_ok=True)
    for item in sorted(model_dir.iterdir()):
        if item.is_file() and item.suffix in (".json", ".txt") and not item.name.startswith("."):
            shutil.copy(item, destination / item.name)
    return destination


def write_reference(run: LegacyRun, out: Path, overwrite: bool = False) -> Path:
    """Write `run` as a reference bundle at `out` (atomically; see `parity.bundle.write_bundle`)."""
    with tempfile.TemporaryDirectory(prefix="qarac-bundle-") as scratch:
        files = model_files(Path(run.meta["model"]), Path(scratch) / "model")
        return write_bundle(to_bundle(run, files), out, overwrite=overwrite)


def read_reference(directory: Path) -> LegacyRun:
    """The `LegacyRun` of a bundle on disk, every file checked first.

    Raises:
        BundleError: see `parity.bundle.read_bundle`, plus a bundle whose model files do not match it.
    """
    bundle = read_bundle(directory)
    check_bundle_model(bundle)
    run = from_bundle(bundle)
    run.meta["model_files"] = str(bundle.model_dir)
    run.meta["bundle_digest"] = bundle.digest
    return run


def check_bundle_model(bundle: Bundle) -> None:
    """The bundle's model/ directory must describe the architecture the bundle was recorded for."""
    if bundle.model_dir is None:
        raise BundleError(f"bundle {bundle.directory} has no model/ directory")
    config_path = bundle.model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"bundle file {config_path} is unreadable: {error}") from None
    check_same_model(bundle, config)
    recorded = {key[len("weights/"):] for key in bundle.arrays if key.startswith("weights/")}
    if not recorded:
        raise BundleError(f"bundle {bundle.directory} holds no weights/ arrays")
