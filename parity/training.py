"""Training parity: K optimizer steps of the legacy `fit` against the port's
legacy preset, from the same weights on the same batches.

Matching the optimizers: torch's NAdam with `momentum_decay=1`, `eps=1e-7`
reproduces Keras' Nadam formula, and a LambdaLR reproduces `ExponentialDecay`
(see docs/optimizer.md and `qarac.train.make_optimizer`). Dropout is set to 0
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
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from parity import bridge
from parity.inputs import sample_batch
from parity.tf_side import tf_inputs, tf_targets
from qarac import QaracConfig, QaracLoss, QaracTrainerModel
from qarac.checkpoint import read_roberta_config
from qarac.train import TrainConfig, make_optimizer, make_scheduler

OBJECTIVES = ("encode_decode", "question_answering", "reasoning", "consistency")
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
    steps: list[dict[str, Any]] = field(default_factory=list)
    max_abs_diff: float = float("nan")
    legacy_graph_fit_max_abs_diff: float = float("nan")
    control_torch_default_nadam_max_abs_diff: float = float("nan")
    passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dropout_free_copy(model_dir: Path, destination: Path) -> Path:
    """The checkpoint with dropout 0 in its config (weights and tokenizer copied as they are)."""
    destination.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.is_file():
            shutil.copy(item, destination / item.name)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (destination / "config.json").write_text(json.dumps(config, indent=2))
    return destination


def _legacy_run(trainer: Any, batches, run_eagerly: bool) -> list[dict]:
    """Compile `trainer` afresh (new Nadam state) and take one `train_on_batch` step per batch."""
    from legacy_keras._tf import keras
    from legacy_keras.build import DECAY_RATE, DECAY_STEPS, legacy_losses

    schedule = keras.optimizers.schedules.ExponentialDecay(PARITY_LEARNING_RATE, DECAY_STEPS, DECAY_RATE)
    trainer.compile(optimizer=keras.optimizers.Nadam(learning_rate=schedule), loss=legacy_losses(),
                    run_eagerly=run_eagerly)
    hidden = trainer.question_encoder.config.hidden_size
    history = []
    for batch in batches:
        logs = trainer.train_on_batch(tf_inputs(batch.inputs), tf_targets(batch.targets, hidden), return_dict=True)
        history.append({"total": float(logs["loss"]), **{name: float(logs[f"{name}_loss"]) for name in OBJECTIVES}})
    return history


def _port_run(model: QaracTrainerModel, batches, optimizer_factory) -> list[dict]:
    optimizer, scheduler = optimizer_factory(model)
    loss_fn = QaracLoss(model.config)
    model.train()  # dropout is 0 in this config: training mode changes nothing else
    history = []
    for batch in batches:
        losses = loss_fn(model(batch.inputs), batch.targets)
        losses.total.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.append(losses.item())
    return history


def _keras_matched(model: QaracTrainerModel):
    config = TrainConfig(output_dir="unused", learning_rate=PARITY_LEARNING_RATE)
    optimizer = make_optimizer(model, config)
    return optimizer, make_scheduler(optimizer, config)


def _torch_default_nadam(model: QaracTrainerModel):
    config = TrainConfig(output_dir="unused", learning_rate=PARITY_LEARNING_RATE)
    optimizer = torch.optim.NAdam(model.parameters(), lr=PARITY_LEARNING_RATE)
    return optimizer, make_scheduler(optimizer, config)


def _max_diff(a: list[dict], b: list[dict]) -> float:
    return max(abs(x[key] - y[key]) for x, y in zip(a, b) for key in ("total", *OBJECTIVES))


def training_parity(model_dir: Path, steps: int = 5, batch_size: int = 4, seed: int = 0) -> TrainingParity:
    """Run K steps on each side and compare the per-step losses."""
    if steps < 1:
        raise ValueError(f"training parity needs at least one step, got {steps}")
    from legacy_keras.build import build_trainer

    with tempfile.TemporaryDirectory(prefix="qarac-train-parity-") as scratch:
        directory = _dropout_free_copy(Path(model_dir), Path(scratch) / "model")
        config = QaracConfig.from_roberta_config(read_roberta_config(directory)).legacy()
        batches = [sample_batch(directory, config, batch_size, seed + step) for step in range(steps)]
        trainer = build_trainer(directory, seed=seed, compile=False)
    initial = trainer.get_weights()
    port = QaracTrainerModel(config)
    bridge.copy_tf_to_pt(trainer, port)
    control = QaracTrainerModel(config)
    control.load_state_dict(port.state_dict())
    legacy_eager = _legacy_run(trainer, batches, run_eagerly=True)
    trainer.set_weights(initial)
    legacy_graph = _legacy_run(trainer, batches, run_eagerly=False)
    port_history = _port_run(port, batches, _keras_matched)
    control_history = _port_run(control, batches, _torch_default_nadam)
    result = TrainingParity(steps_run=steps, learning_rate=PARITY_LEARNING_RATE, tolerance=TRAINING_TOLERANCE)
    for step in range(steps):
        result.steps.append({
            "step": step + 1,
            "legacy": legacy_eager[step],
            "pytorch": port_history[step],
            "abs_diff": {key: abs(legacy_eager[step][key] - port_history[step][key]) for key in ("total", *OBJECTIVES)},
            "legacy_graph_fit": legacy_graph[step],
            "pytorch_torch_default_nadam": control_history[step],
        })
    result.max_abs_diff = _max_diff(legacy_eager, port_history)
    result.legacy_graph_fit_max_abs_diff = _max_diff(legacy_graph, port_history)
    result.control_torch_default_nadam_max_abs_diff = _max_diff(legacy_eager, control_history)
    result.passed = result.max_abs_diff <= TRAINING_TOLERANCE
    return result
