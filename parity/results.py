"""The results a run produces, as plain data: the legacy runner's `LegacyRun`, the port runner's
`PortRun` and the comparator's `ParityReport`.

The legacy runner (`parity.legacy.record`) fills a `LegacyRun`; the bundle codec
(`parity.reference`) writes and reads one; the port runner (`parity.port_runner`)
runs the port on it and fills a `PortRun`; the comparator (`parity.comparator`)
takes the two and returns a `ParityReport`; the report writers (`parity.report`,
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
class PortNoise:
    """The port's own noise on one batch: how far each variant of its own code path moves each value.

    Attributes:
        moved: value (`output:<name>` or stage) -> variant (`parity.noise.VARIANTS`) -> max |variant -
            the port's float32 run| over real tokens.
        skipped: variant -> why it was not run on this batch.
    """

    moved: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class PortTraining:
    """The port's side of training parity (`parity.port_training`): the batches its own pipeline built
    (as arrays, keyed as `LegacyTraining.batches`) and per step the losses of the Keras-matched
    optimizer (`matched`) and of torch's default NAdam (`control`)."""

    batches: list[dict[str, np.ndarray]]
    matched: list[dict[str, float]]
    control: list[dict[str, float]]


@dataclass
class PortRun:
    """What the port computed on a `LegacyRun`'s inputs, as plain data (`parity.port_runner.run_port`).

    Attributes:
        versions: the port side's libraries.
        legacy_preset: the port ran in the legacy preset (a model handed in may not).
        captures: case -> the port's captured forward (`CAPTURES`).
        noise: case -> the port's own noise variants (`PortNoise`), for every compared case.
        introduced: case -> the stage outputs of a forward whose every stage was fed the legacy's
            input to it (the `padded` and `sharp` cases).
        float64_captures: case -> the port's float64 twin's captured forward (every compared case, one
            of its noise variants; the all-padding row only where the legacy's float64 run was recorded).
        float64_gradients: the float64 twin's gradients of the total loss, or None.
        determinism: `torch_tf32_off`, `torch_dropout_off`, `torch_repeat_identical`.
        precision_settings: torch's float32 settings as the port's forwards ran with them, read back
            (`parity.port_runner.precision_settings`: device, TF32 for matmul and cuDNN, float32 matmul precision).
        gradients: `pt/legacy`, `pt/default` -> parameter -> gradient of the total loss (None: none).
        reachability: the same modes -> parameter group -> objective -> reached.
        default_parameters: every parameter of the default preset.
        backward: stage -> the input gradient the port's stage passes on, fed the legacy's input and
            upstream gradient (`LegacyBackward.order`).
        deviations: the deviation ledger as measured (`parity.ledger`), empty outside the legacy preset.
        training: the port's side of training parity, or None.
        l2_normalized: the port's `l2_normalize` of the legacy's probe vectors (`LegacyRun.l2_probe`).
        timings_s: seconds each part of the port's run took.
    """

    versions: dict[str, str]
    legacy_preset: bool
    captures: dict[str, Capture] = field(default_factory=dict)
    noise: dict[str, PortNoise] = field(default_factory=dict)
    introduced: dict[str, Capture] = field(default_factory=dict)
    float64_captures: dict[str, Capture] = field(default_factory=dict)
    float64_gradients: dict[str, np.ndarray | None] | None = None
    determinism: dict[str, bool] = field(default_factory=dict)
    precision_settings: dict[str, Any] = field(default_factory=dict)
    gradients: dict[str, dict[str, np.ndarray | None]] = field(default_factory=dict)
    reachability: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)
    default_parameters: list[str] = field(default_factory=list)
    backward: dict[str, np.ndarray] = field(default_factory=dict)
    deviations: list[dict[str, Any]] = field(default_factory=list)
    training: PortTraining | None = None
    l2_normalized: np.ndarray | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


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
    precision: dict[str, Any] | None = None  # parity.precision's section
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


