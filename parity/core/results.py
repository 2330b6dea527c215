"""What each side's runner produces, as plain data (numpy arrays by name): the comparator's input.

Values are named `stage:<name>` (a stage's output, in execution order) and `output:<name>` (the
model's outputs). A Keras run may come from a live recording (`parity.core.keras_side`) or from a
bundle (`parity.core.codec`): the same object either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parity.core.spec import Batch

# The forward variants each side runs: its float32 run, its float64 twin, the batch rows permuted
# (results un-permuted), and (the port only) one thread instead of the default.
FLOAT32, FLOAT64, PERMUTED, ONE_THREAD = "float32", "float64", "permuted", "one_thread"

Values = dict[str, np.ndarray]
Gradients = dict[str, "np.ndarray | None"]


@dataclass(frozen=True)
class StageSite:
    """A stage as run: its name, the Keras layer and the torch module behind it."""

    name: str
    keras: str
    torch: str


@dataclass
class KerasRun:
    """The original's run on every batch.

    Attributes:
        pair: the spec's name.
        versions: library versions of the recording.
        weights: Keras variable name -> float32 value: the weights both sides run with.
        stages: the stages captured, in execution order.
        batches: case -> the batch.
        values: case -> variant (`FLOAT32`, `FLOAT64`, `PERMUTED`) -> value name -> array.
        gradient_case: the batch the gradients were taken on.
        gradients: "<mode>" (float32, per execution mode) and "float64" (eager) -> variable -> gradient
            (None: the tape returned none).
        permutation: case -> the row order of its permuted variant (None: one row).
    """

    pair: str
    versions: dict[str, str]
    weights: dict[str, np.ndarray]
    stages: list[StageSite]
    batches: dict[str, Batch]
    values: dict[str, dict[str, Values]]
    gradient_case: str
    gradients: dict[str, Gradients]
    permutation: dict[str, list[int] | None]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TorchRun:
    """The port's run on the same batches.

    Attributes:
        values: case -> variant (`FLOAT32`, `FLOAT64`, `PERMUTED`, `ONE_THREAD`) -> value name -> array.
        gradients: `FLOAT32` and `FLOAT64` -> torch parameter key -> gradient (None: never reached).
        repeat_identical: a second float32 forward gave every value bit for bit again.
        kept: torch keys that kept the port's own value (declared torch_only).
    """

    versions: dict[str, str]
    values: dict[str, dict[str, Values]]
    gradients: dict[str, Gradients]
    repeat_identical: bool
    parameters: list[str]
    kept: list[str] = field(default_factory=list)
