"""The bundle codec: a `LegacyRun` as a reference bundle (`parity.bundle`'s files) and back.

`to_bundle` / `write_reference` serialise a run, `from_bundle` / `read_reference`
read one, every file checked first; a live and a recorded run are then the same
data to the comparator (`parity.check`). Imports no TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from parity.bundle import SCHEMA_VERSION, Bundle, BundleError, check_same_model, read_bundle, write_bundle
from parity.noise import compared_values, max_difference, values_and_masks
from parity.results import CAPTURES, CASES, LegacyBackward, LegacyFloat64, LegacyRun, LegacyTraining
from parity.sharp import VERSION_KEY, version_of_bundle
from parity.stages import Capture
from parity.tolerance import RECORDING_CONSISTENCY_BOUND, recording_consistent
from qarac.batch import INPUT_NAMES, TokenBatch

# The version of the noise-floor inputs a bundle holds (`to_bundle`): 2 adds the legacy's float64 run.
NOISE_FLOORS_VERSION = 2


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


def read_batches(bundle: Bundle) -> tuple[dict[str, dict[str, TokenBatch]], dict[str, Any]]:
    """The bundle's own batches: case -> trainer input -> tokens, and the padded batch's targets."""
    inputs = {case: {name: _read_tokens(bundle, f"inputs/{case}/{name}") for name in INPUT_NAMES} for case in CASES}
    targets: dict[str, Any] = {name: _read_tokens(bundle, f"targets/{name}") for name in ("encode_decode", "reasoning")}
    targets["consistency"] = torch.from_numpy(bundle.array("targets/consistency").copy())
    return inputs, targets


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
    inputs, targets = read_batches(bundle)
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
    run = LegacyRun({**bundle.meta, VERSION_KEY: sharpened_set}, weights, results["weight_summary"], inputs, targets,
                     {case: _read_capture(bundle, case, orders[case]) for case in CAPTURES}, floors,
                     results["determinism"], gradients, results["fit_warning"], results["parameters"],
                     results["fit_missing"], legacy_backward,
                     (bundle.array("l2_probe/vectors"), bundle.array("l2_probe/legacy")), training,
                     results.get("record_timings_s", {}), _read_float64(bundle, results.get("float64")))
    inconsistent = float64_inconsistencies(run)
    if inconsistent:
        raise BundleError(f"bundle {bundle.directory} is inconsistent: its float32 {inconsistent[0]} is further from its "
                          f"own float64 run than float32 arithmetic explains (more than {RECORDING_CONSISTENCY_BOUND:g} "
                          f"of the value's magnitude){f', and {len(inconsistent) - 1} more' if len(inconsistent) > 1 else ''}")
    return run


def float64_inconsistencies(run: LegacyRun) -> list[str]:
    """"case: value (relative error)" for each recorded float32 value its float64 run cannot explain
    (`parity.tolerance.recording_consistent`); empty where the run holds no float64 run."""
    if run.float64 is None:
        return []
    found = []
    for case, legacy in run.captures.items():
        exact = run.float64.captures.get(case)
        if exact is None:
            continue
        inputs = run.inputs[case if case in run.inputs else "padded"]  # sharp: the padded batch
        values, masks = values_and_masks(legacy, inputs)
        exact_values = compared_values(exact)
        for name, value in values.items():
            if name not in exact_values:
                continue
            error = max_difference(value, exact_values[name], masks[name])
            scale = max_difference(exact_values[name], np.zeros_like(exact_values[name]), masks[name])
            if not recording_consistent(error, scale):
                found.append(f"{case}: {name} ({error / scale if scale else float('inf'):.3g})")
    return found


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
