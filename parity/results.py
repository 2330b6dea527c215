"""The results a run produces, as plain data: the legacy runner's `LegacyRun` and the comparator's `ParityReport`.

The legacy runner (`parity.legacy.record`) fills a `LegacyRun`; the bundle codec
(`parity.reference`) writes and reads one; the comparator (`parity.check`) takes
one and returns a `ParityReport`; the report writers (`parity.report`,
`parity.plot`) read the report only. Nothing here imports a framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.stages import Capture

if TYPE_CHECKING:
    from qarac.batch import TokenBatch

# The batches every run compares on, in the order they are recorded.
CASES = ("padded", "unpadded", "max_length", "all_padding_row")
# Captured forwards: each batch with the model's weights, and the padded batch with the
# sharpened weight set (`parity.sharp`).
CAPTURES = (*CASES, "sharp")


@dataclass
class LegacyBackward:
    """The legacy's per-stage tensors and gradients of the total loss, as arrays (stages with a float input).

    Compared by `parity.backward`; recorded by `parity.legacy.capture.legacy_backward`.
    """

    stage_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    upstream: dict[str, np.ndarray] = field(default_factory=dict)  # d loss / d stage output
    input_gradients: dict[str, np.ndarray] = field(default_factory=dict)  # d loss / d stage input
    order: list[str] = field(default_factory=list)


@dataclass
class LegacyTraining:
    """K legacy training steps on the original's pipeline (`parity.legacy.training`; checked by `parity.training`).

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
            (`parity.legacy.float64.FLOAT64_SUBSTITUTES`).
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
        backward: the legacy's per-stage gradients of the total loss (`LegacyBackward`).
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


