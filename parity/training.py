"""Training parity: K optimizer steps of the legacy `fit` against the port's
legacy preset, from the same weights on the same batches.

The batches are the original's (SPEC.md 1.5): the first K rectangular batches
of epoch 0 of its input pipeline on the sample corpora, built twice, the legacy
side by `legacy_keras.pipeline` and the port side by `qarac.data`'s legacy data
preset, each with its own code; the report says which batches were used, which
ragged ones were skipped (the original's fit would have stopped there), and
whether the two sides' batches were identical.

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

import dataclasses
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from parity import bridge
from parity.inputs import tokenizer_for
from qarac import QaracConfig, QaracLoss, QaracTrainerModel
from qarac.checkpoint import read_roberta_config
from qarac.data import DEFAULT_DATA_DIR, CorpusBatches, DataConfig
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


@dataclass
class PipelineBatches:
    """The same K batches of the original's pipeline as each side built them."""

    legacy: list[tuple[dict, dict]]  # (X, Y) TF tensors from legacy_keras.pipeline
    port: list[Any]  # QaracBatch from qarac.data's legacy preset
    indices: list[int]
    ragged_skipped: list[int]
    identical: bool


def pipeline_batches(model_dir: Path, config: QaracConfig, steps: int, batch_size: int, seed: int,
                     data_dir: Path = DEFAULT_DATA_DIR) -> PipelineBatches:
    """The first `steps` rectangular batches of epoch 0 of the original's pipeline, built by both sides.

    Raises:
        ValueError: the epoch holds fewer than `steps` rectangular batches.
    """
    import numpy as np

    from legacy_keras.pipeline import CombinedCorpus, RaggedBatchError, legacy_tokenizer

    legacy = CombinedCorpus.from_directory(data_dir, legacy_tokenizer(model_dir), seed=seed, batch_size=batch_size,
                                           qa_target_width=config.hidden_size)
    data_config = dataclasses.replace(DataConfig().legacy(), batch_size=batch_size)
    port = CorpusBatches.from_directory(data_dir, tokenizer_for(model_dir, config), data_config,
                                        max_length=config.max_tokens, seed=seed)
    result = PipelineBatches([], [], [], [], True)
    for index, (samples, rows) in enumerate(zip(legacy.raw_batches(), port.plan(0))):
        try:
            x, y = legacy.batch(samples, index)
        except RaggedBatchError:
            result.ragged_skipped.append(index)
            continue
        batch = port.build(rows, index)
        same = all(np.array_equal(batch.inputs[name].input_ids.numpy(), x[name]["input_ids"].numpy())
                   and np.array_equal(batch.inputs[name].attention_mask.numpy(), x[name]["attention_mask"].numpy())
                   for name in x)
        same &= all(np.array_equal(batch.targets[name].input_ids.numpy(), y[name].numpy())
                    for name in ("encode_decode", "reasoning"))
        same &= np.array_equal(batch.targets["consistency"].numpy(), y["consistency"].numpy())
        result.identical &= bool(same)
        result.legacy.append((x, y))
        result.port.append(batch)
        result.indices.append(index)
        if len(result.indices) == steps:
            return result
    raise ValueError(f"epoch 0 of the original's pipeline (batch {batch_size}, seed {seed}) has only "
                     f"{len(result.indices)} rectangular batches, fewer than the {steps} steps asked for")


def _legacy_run(trainer: Any, batches, run_eagerly: bool) -> list[dict]:
    """Compile `trainer` afresh (new Nadam state) and take one `train_on_batch` step per (X, Y) batch."""
    from legacy_keras._tf import keras
    from legacy_keras.build import DECAY_RATE, DECAY_STEPS, legacy_losses

    schedule = keras.optimizers.schedules.ExponentialDecay(PARITY_LEARNING_RATE, DECAY_STEPS, DECAY_RATE)
    trainer.compile(optimizer=keras.optimizers.Nadam(learning_rate=schedule), loss=legacy_losses(),
                    run_eagerly=run_eagerly)
    history = []
    for inputs, targets in batches:
        logs = trainer.train_on_batch(inputs, targets, return_dict=True)
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
    """Run K steps on each side on the original's batches and compare the per-step losses.

    Args:
        batch_size: of the original's pipeline (32 in the original; smaller keeps the check fast).
        seed: the heads' initialisation and the pipeline's shuffles.
    """
    if steps < 1:
        raise ValueError(f"training parity needs at least one step, got {steps}")
    from legacy_keras.build import build_trainer

    with tempfile.TemporaryDirectory(prefix="qarac-train-parity-") as scratch:
        directory = _dropout_free_copy(Path(model_dir), Path(scratch) / "model")
        config = QaracConfig.from_roberta_config(read_roberta_config(directory)).legacy()
        batches = pipeline_batches(directory, config, steps, batch_size, seed)
        trainer = build_trainer(directory, seed=seed, compile=False)
    initial = trainer.get_weights()
    port = QaracTrainerModel(config)
    bridge.copy_tf_to_pt(trainer, port)
    control = QaracTrainerModel(config)
    control.load_state_dict(port.state_dict())
    legacy_eager = _legacy_run(trainer, batches.legacy, run_eagerly=True)
    trainer.set_weights(initial)
    legacy_graph = _legacy_run(trainer, batches.legacy, run_eagerly=False)
    port_history = _port_run(port, batches.port, _keras_matched)
    control_history = _port_run(control, batches.port, _torch_default_nadam)
    result = TrainingParity(steps_run=steps, learning_rate=PARITY_LEARNING_RATE, tolerance=TRAINING_TOLERANCE,
                            batch_size=batch_size, batch_indices=batches.indices,
                            ragged_batches_skipped=batches.ragged_skipped, batches_identical=batches.identical)
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
    result.passed = result.batches_identical and result.max_abs_diff <= TRAINING_TOLERANCE
    return result
