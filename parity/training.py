"""Training parity: K optimizer steps of the legacy `fit` against the port's
legacy preset, from the same weights on the same batches.

The batches are the original's (docs/legacy.md §1.5): the first K rectangular batches
of epoch 0 of its input pipeline on the sample corpora, built twice, the legacy
side by `legacy_keras.pipeline` and the port side by `qarac.data`'s legacy data
preset, each with its own code; the report says which batches were used, which
ragged ones were skipped (the original's fit would have stopped there), and
whether the two sides' batches were identical.

Matching the optimizers: torch's NAdam with `momentum_decay=1`, `eps=1e-7`
reproduces Keras' Nadam formula, and a LambdaLR reproduces `ExponentialDecay`
(see docs/optimizer.md and `qarac.training.optimizer.make_optimizer`). Dropout is set to 0
in a copy of the checkpoint's config so that both sides are deterministic.

Two legacy runs are made:
- `fit(run_eagerly=True)`: Keras' documented Nadam, every gradient present.
  This is what the port must and does match (the check).
- `fit` as the original ran it (a traced train step): two TensorFlow-side
  failures make it diverge, and the report shows by how much: the local
  projections get no gradient (legacy_keras/README.md), and tf-keras' Nadam,
  traced, re-multiplies its momentum product once per variable (docs/optimizer.md).
A control run of the port with torch's default NAdam (`momentum_decay=4e-3`,
`eps=1e-8`) shows that the comparison is sharp enough to catch an unmatched optimizer.

The port's runs are made by `parity.port_training` (`PortTraining`); this module compares them
with the legacy's recorded ones (`LegacyTraining`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from parity.results import LegacyTraining, PortTraining
from qarac.objectives import OBJECTIVES

# A learning rate large enough that an unmatched optimizer shows within a few
# steps; the original's 1e-5 moves the losses too little to tell optimizers apart.
PARITY_LEARNING_RATE = 1e-3
# Per-step absolute loss tolerance: float32 losses of order 10, after K
# updates computed by two frameworks' kernels and optimizer arithmetic (Keras
# float32 scalars, torch float64 ones: ~1e-7 relative per step).
TRAINING_TOLERANCE = 1e-4


@dataclass
class TrainingParity:
    """Per-step losses of each run and the check of the port against legacy eager `fit`."""

    steps_run: int
    learning_rate: float
    tolerance: float
    objectives: tuple[str, ...] = OBJECTIVES
    data: str = "legacy_pipeline"  # the original's input pipeline, built by each side's own code
    batch_size: int = 0
    batch_indices: list[int] = field(default_factory=list)  # the epoch-0 batches trained on
    ragged_batches_skipped: list[int] = field(default_factory=list)  # where the original's fit would stop
    batches_identical: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    max_abs_diff: float = float("nan")
    legacy_graph_fit_max_abs_diff: float = float("nan")
    control_torch_default_nadam_max_abs_diff: float = float("nan")
    passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _max_diff(a: list[dict], b: list[dict]) -> float:
    return max(abs(x[key] - y[key]) for x, y in zip(a, b) for key in ("total", *OBJECTIVES))


def _same_batch(port: dict[str, np.ndarray], legacy: dict[str, np.ndarray]) -> bool:
    """The port's batch holds exactly the legacy pipeline's ids, masks and targets."""
    return all(np.array_equal(value, legacy[key]) for key, value in port.items())


def compare_training(recorded: LegacyTraining, port: PortTraining) -> TrainingParity:
    """Training parity: the port's K steps (`PortTraining`) against the legacy's recorded ones."""
    settings = recorded.settings
    identical = all(_same_batch(batch, arrays) for batch, arrays in zip(port.batches, recorded.batches))
    result = TrainingParity(steps_run=settings["steps"], learning_rate=settings["learning_rate"],
                            tolerance=TRAINING_TOLERANCE, batch_size=settings["batch_size"],
                            batch_indices=list(settings["batch_indices"]),
                            ragged_batches_skipped=list(settings["ragged_batches_skipped"]), batches_identical=identical)
    for step, (legacy, pytorch) in enumerate(zip(recorded.eager, port.matched)):
        result.steps.append({
            "step": step + 1, "legacy": legacy, "pytorch": pytorch,
            "abs_diff": {key: abs(legacy[key] - pytorch[key]) for key in ("total", *OBJECTIVES)},
            "legacy_graph_fit": recorded.graph[step], "pytorch_torch_default_nadam": port.control[step],
        })
    result.max_abs_diff = _max_diff(recorded.eager, port.matched)
    result.legacy_graph_fit_max_abs_diff = _max_diff(recorded.graph, port.matched)
    result.control_torch_default_nadam_max_abs_diff = _max_diff(recorded.eager, port.control)
    result.passed = result.batches_identical and result.max_abs_diff <= TRAINING_TOLERANCE
    return result
