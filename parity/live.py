"""The live runs: the legacy runner, then the comparator, in one process (`qarac-parity` without a
subcommand), and the live helpers for tests that hold both models.

A live run is "record the legacy in memory, then check": the same `check` as
`qarac-parity check BUNDLE`, given the `LegacyRun` before it is written. The legacy
runner (`parity.legacy`, TensorFlow) is imported when a live run starts, so that this
module, and the command that checks TensorFlow is installed first, import without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

from parity import bridge
from parity.check import check
from parity.compare import Comparison, ParityFailure
from parity.forward import CaseResult, compare_captures
from parity.keras3 import add_keras3
from parity.memory import release_memory
from parity.port import default_preset
from parity.results import ParityReport
from parity.stages import Capture
from parity.capture import capture_torch
from parity.port_training import check_training
from parity.tolerance import TINY_TOLERANCE
from parity.training import TrainingParity
from qarac import QaracConfig, QaracTrainerModel
from qarac.checkpoint import read_roberta_config


def run_parity(model_dir: Path, tolerance: float | None = None, seed: int = 0, batch_size: int = 4,
               train_steps: int = 0, progress: Callable[[str], None] = lambda stage: None,
               fit_probe: Any = None, keras3: bool = False) -> ParityReport:
    """The live harness: record the legacy on one RoBERTa directory, in memory, then `check` the port.

    Args:
        fit_probe: the `fit` probe, when the caller started it already (`parity.fit_probe`).
        keras3: also run QARAC on Keras 3's three backends against the same recording (`parity.keras3`).
    """
    from parity.legacy.record import record_legacy

    start = time.perf_counter()
    run = record_legacy(model_dir, seed, batch_size, train_steps, progress, fit_probe)
    release_memory()  # the legacy model's gigabytes go back before the port's models are built
    report = check(run, tolerance, progress=progress)
    if keras3:
        add_keras3(report, run, progress=progress)
    report.timings_s = {**{f"record {k}": v for k, v in run.timings_s.items()}, **report.timings_s,
                        "total": round(time.perf_counter() - start, 3)}
    return report


def build_models(model_dir: Path, seed: int = 0) -> tuple[Any, QaracTrainerModel, QaracTrainerModel, bridge.WeightMap]:
    """`build_legacy_pair` and the port's default preset with the same weights (no pooler)."""
    from parity.legacy.record import build_legacy_pair

    tf_model, pt_legacy, weight_map = build_legacy_pair(model_dir, seed)
    return tf_model, pt_legacy, default_preset(pt_legacy.config, pt_legacy.state_dict()), weight_map


def training_parity(model_dir: Path, steps: int = 5, batch_size: int = 4, seed: int = 0) -> TrainingParity:
    """Run K steps on each side on the original's batches and compare the per-step losses (live).

    Args:
        batch_size: of the original's pipeline (32 in the original; smaller keeps the check fast).
        seed: the heads' initialisation and the pipeline's shuffles.
    """
    from parity.legacy.training import record_legacy_training

    training, weights = record_legacy_training(model_dir, steps, batch_size, seed)
    config = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    run = SimpleNamespace(training=training, weights=weights, meta={"model_config": dict(config.base),
                                                                   "model": str(model_dir)})
    return check_training(run)


def compare_case(pt_model: QaracTrainerModel, tf_model: Any, inputs: Mapping[str, Any], case: str,
                 tolerance: float = TINY_TOLERANCE, legacy: Capture | None = None) -> tuple[CaseResult, Capture, Capture]:
    """Run both sides once on a batch (or take the legacy's recorded capture) and compare.

    Returns: the comparison, the PyTorch capture and the legacy capture.
    """
    from parity.legacy.capture import capture_keras

    legacy = legacy if legacy is not None else capture_keras(tf_model, inputs)
    pt = capture_torch(pt_model.eval(), inputs)
    return compare_captures(pt, legacy, inputs, case, tolerance), pt, legacy


def compare_outputs(pt_model: QaracTrainerModel, tf_model: Any, inputs: Mapping[str, Any], case: str,
                    tolerance: float = TINY_TOLERANCE) -> list[Comparison]:
    """Compare every output on one batch; names are `case.output`."""
    return compare_case(pt_model, tf_model, inputs, case, tolerance)[0].outputs


def assert_forward_parity(pt_model: QaracTrainerModel, tf_model: Any, inputs: Mapping[str, Any],
                          tolerance: float = TINY_TOLERANCE) -> list[Comparison]:
    """For user tests: raise `ParityFailure` naming each output over tolerance.

    Both models must already hold the same weights (see `parity.bridge.copy_tf_to_pt`).
    """
    comparisons = compare_outputs(pt_model.eval(), tf_model, inputs, "forward", tolerance)
    failures = [c for c in comparisons if not c.passed]
    if failures:
        raise ParityFailure(failures)
    return comparisons


@dataclass
class Localisation:
    """Stage-by-stage comparison and the first stage over tolerance (None: all pass)."""

    stages: list[Comparison] = field(default_factory=list)
    first_failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [c.to_dict() for c in self.stages], "first_failure": self.first_failure}


def localise(pt_model: QaracTrainerModel, tf_model: Any, inputs: Mapping[str, Any],
             tolerance: float = TINY_TOLERANCE) -> Localisation:
    """Compare every stage of the real forward and name the first (in execution order) over tolerance."""
    result = compare_case(pt_model, tf_model, inputs, "localise", tolerance)[0]
    return Localisation(result.stages, result.first_failure)
