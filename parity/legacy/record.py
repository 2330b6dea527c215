"""The legacy runner: the legacy side of every check, run once and kept as data (a `LegacyRun`).

Everything the parity checks need from TensorFlow is computed here, in one
place: the legacy's captured forwards (outputs and every stage) on each batch,
its own float32 noise, its float64 run, its gradients in eager and graph mode,
the variables its `fit` warns about, its per-stage backward, its `l2_normalize`
on probe vectors and, optionally, K steps of its training. `parity.check.check`
compares the port with a `LegacyRun` and needs no TensorFlow; a live
`qarac-parity` run is `check(record_legacy(...))` (`parity.live`), and
`qarac-parity record` writes the same `LegacyRun` to a reference bundle
(`parity.reference`), so a live and a recorded run are compared by the same code.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from legacy_keras._tf import tf
from legacy_keras.build import build_trainer
from parity import bridge
from parity.bundle import vocabulary_sha256
from parity.fit_probe import finish_fit_probe, start_fit_probe
from parity.inputs import all_padding_row, max_length_batch, sample_batch, tokenizer_for, unpadded
from parity.legacy.capture import capture_keras, legacy_floor_variants, legacy_padded_pass
from parity.legacy.float64 import record_float64
from parity.legacy.tensors import disable_tf32, tf_gradients
from parity.legacy.training import record_legacy_training
from parity.legacy.vectorized import cached_vectorized_map
from parity.noise import reorder_moved
from parity.results import CASES, LegacyRun
from parity.sharp import CURRENT_VERSION, VERSION_KEY, sharpened
from qarac import QaracConfig, QaracTrainerModel
from qarac.base import skip_init
from qarac.checkpoint import read_roberta_config
from qarac.objectives import OBJECTIVES


def legacy_versions() -> dict[str, str]:
    import tf_keras
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__, "transformers": transformers.__version__, "numpy": np.__version__}


def build_legacy_pair(model_dir: Path, seed: int = 0) -> tuple[Any, QaracTrainerModel, bridge.WeightMap]:
    """Legacy trainer from the directory; the port's legacy preset holding its weights (bridged)."""
    tf_model = build_trainer(model_dir, seed=seed, compile=True)
    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    with skip_init():  # the bridge writes every parameter, or refuses an incomplete map
        pt_legacy = QaracTrainerModel(architecture.legacy()).eval()
    weight_map = bridge.copy_tf_to_pt(tf_model, pt_legacy)
    return tf_model, pt_legacy, weight_map


def round_trip_exact(tf_model: Any, pt_model: QaracTrainerModel, weight_map: bridge.WeightMap) -> bool:
    """PT -> TF -> PT reproduces every parameter bit for bit (read back from TF, compared, the port untouched)."""
    bridge.copy_pt_to_tf(pt_model, tf_model, weight_map)
    params = dict(pt_model.named_parameters())
    return all(np.array_equal(value, params[name].detach().cpu().numpy())
               for name, value in bridge.tf_values_as_pt(tf_model, weight_map))


def l2_probe_vectors() -> np.ndarray:
    """Vectors with squared norms from 1e-20 to 1e4: `l2_normalize`'s floor matters only for the small ones,
    which no realistic forward produces, so the pooling head's primitive is compared on its own."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(13, 8))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return (directions * np.logspace(-10, 2, 13)[:, None]).astype(np.float32)


def legacy_l2_probe() -> tuple[np.ndarray, np.ndarray]:
    vectors = l2_probe_vectors()
    return vectors, np.asarray(tf.math.l2_normalize(tf.constant(vectors), axis=1))


def largest_magnitudes(grads: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """Per-objective gradients serve only reachability (does an objective reach a parameter?):
    each one's largest magnitude is kept, (1,), not the whole array (4 x the weights' size)."""
    return {name: None if value is None else np.abs(value).max(initial=0.0).reshape(1)
            for name, value in grads.items()}


@cached_vectorized_map()  # each eager pooling-head map traced once per shape, not at every call
def record_legacy(model_dir: Path, seed: int = 0, batch_size: int = 4, train_steps: int = 0,
                  progress: Callable[[str], None] = lambda stage: None, fit_probe: Any = None) -> LegacyRun:
    """Run the legacy side of every check once (needs the `legacy` extra).

    Args:
        fit_probe: the `fit` probe, if the caller started it already (`parity.fit_probe`), for
            this model directory and seed.
    """
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
    to_pt = weight_map.as_pt
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
    floors = {"padded": legacy_floor_variants(tf_model, inputs["padded"], captures["padded"], seed)}
    # The reordering is repeated on the other batches only where it moved something here (parity.noise).
    reorder = reorder_moved(floors["padded"])
    for case in ("unpadded", "max_length"):
        floors[case] = legacy_floor_variants(tf_model, inputs[case], captures[case], seed, reorder)
    with sharpened(pt_legacy, tf_model, weight_map, CURRENT_VERSION):
        captures["sharp"] = capture_keras(tf_model, inputs["padded"])
        floors["sharp"] = legacy_floor_variants(tf_model, inputs["padded"], captures["sharp"], seed, reorder)
    again = capture_keras(tf_model, inputs["padded"]).arrays()
    determinism = {"tf_tf32_off": tf32_off,
                   "tf_repeat_identical": all(np.array_equal(again[k], v) for k, v in captures["padded"].arrays().items())}
    lap("forward")
    progress("legacy: gradients tf/graph (Grappler off: see parity.legacy.tensors.tf_gradients)")
    grads["tf/graph"] = to_pt(tf_gradients(tf_model, batch.inputs, batch.targets, "graph", optimize_graph=False))
    lap("gradients")
    progress("legacy: float64 run (forward of every batch, eager gradients)")
    del tf_model, again  # the float32 legacy's memory goes back before the float64 one is built
    float64 = record_float64(model_dir, seed, pt_legacy, weight_map, inputs, batch.targets, CURRENT_VERSION)
    lap("float64")
    training = None
    if train_steps:
        progress("legacy: training")
        training, _ = record_legacy_training(model_dir, train_steps, batch_size, seed, expected_weights=weights)
        lap("training")
    # Waited for last: the probe (tracing `fit` on the other core) needs nothing from the recording.
    progress("legacy: gradients tf/fit (the fit probe)")
    fit_warning = finish_fit_probe(fit_probe)
    lap("fit probe wait")
    tokenizer = tokenizer_for(model_dir, pt_legacy.config)
    meta = {"model": str(model_dir), "legacy_versions": legacy_versions(), "seed": seed, "batch_size": batch_size,
            "model_config": dict(pt_legacy.config.base), "vocabulary_sha256": vocabulary_sha256(tokenizer.get_vocab()),
            VERSION_KEY: CURRENT_VERSION}
    canonical = [entry.pt_name for entry in weight_map.entries]
    fit_missing = sorted(weight_map.tf_to_pt()[name] for name in fit_warning)
    return LegacyRun(meta, weights, summary, inputs, batch.targets, captures, floors, determinism, grads,
                     fit_warning, canonical, fit_missing, legacy_backward, legacy_l2_probe(), training, timings,
                     float64)
