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

import numpy as np
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


def _legacy_arrays(x: dict, y: dict) -> dict[str, np.ndarray]:
    """One legacy pipeline batch (TF tensors) as named arrays."""
    arrays = {}
    for name, tokens in x.items():
        arrays[f"x/{name}/input_ids"] = np.asarray(tokens["input_ids"])
        arrays[f"x/{name}/attention_mask"] = np.asarray(tokens["attention_mask"])
    for name in ("encode_decode", "reasoning", "consistency"):
        arrays[f"y/{name}"] = np.asarray(y[name])
    return arrays


def _same_batch(batch: Any, arrays: dict[str, np.ndarray]) -> bool:
    """The port's batch holds exactly the legacy pipeline's ids, masks and targets."""
    same = all(np.array_equal(batch.inputs[name].input_ids.cpu().numpy(), arrays[f"x/{name}/input_ids"])
               and np.array_equal(batch.inputs[name].attention_mask.cpu().numpy(), arrays[f"x/{name}/attention_mask"])
               for name in batch.inputs)
    same &= all(np.array_equal(batch.targets[name].input_ids.cpu().numpy(), arrays[f"y/{name}"])
                for name in ("encode_decode", "reasoning"))
    return bool(same and np.array_equal(batch.targets["consistency"].cpu().numpy(), arrays["y/consistency"]))


def _dropout_free(config: QaracConfig) -> QaracConfig:
    return config.replace(base={**config.base, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})


def record_legacy_training(model_dir: Path, steps: int = 5, batch_size: int = 4, seed: int = 0,
                           expected_weights: dict[str, np.ndarray] | None = None):
    """The legacy side of training parity: K steps of `fit(run_eagerly=True)` and of the traced `fit`
    on the original's batches, as data.

    Args:
        expected_weights: the weights the rest of the run recorded; training must start from them.

    Returns: (`parity.record.LegacyTraining`, the starting weights by PyTorch name).
    """
    if steps < 1:
        raise ValueError(f"training parity needs at least one step, got {steps}")
    from legacy_keras.build import build_trainer
    from parity.record import LegacyTraining

    with tempfile.TemporaryDirectory(prefix="qarac-train-parity-") as scratch:
        directory = _dropout_free_copy(Path(model_dir), Path(scratch) / "model")
        config = QaracConfig.from_roberta_config(read_roberta_config(directory)).legacy()
        batches = pipeline_batches(directory, config, steps, batch_size, seed)
        trainer = build_trainer(directory, seed=seed, compile=False)
    start = QaracTrainerModel(config)
    bridge.copy_tf_to_pt(trainer, start)
    weights = {name: value.numpy().copy() for name, value in start.state_dict().items()}
    if expected_weights is not None and any(not np.array_equal(value, expected_weights[name])
                                            for name, value in weights.items()):
        raise RuntimeError("the training run's legacy trainer does not start from the recorded weights")
    initial = trainer.get_weights()
    eager = _legacy_run(trainer, batches.legacy, run_eagerly=True)
    trainer.set_weights(initial)
    graph = _legacy_run(trainer, batches.legacy, run_eagerly=False)
    settings = {"steps": steps, "batch_size": batch_size, "seed": seed, "learning_rate": PARITY_LEARNING_RATE,
                "batch_indices": batches.indices, "ragged_batches_skipped": batches.ragged_skipped}
    return LegacyTraining(settings, [_legacy_arrays(x, y) for x, y in batches.legacy], eager, graph), weights


def port_pipeline_batches(model_dir: Path, config: QaracConfig, indices: list[int], batch_size: int, seed: int,
                          data_dir: Path = DEFAULT_DATA_DIR) -> list[Any]:
    """Batches `indices` of epoch 0 of the original's pipeline, as the port's legacy data preset builds them."""
    data_config = dataclasses.replace(DataConfig().legacy(), batch_size=batch_size)
    port = CorpusBatches.from_directory(data_dir, tokenizer_for(model_dir, config), data_config,
                                        max_length=config.max_tokens, seed=seed)
    wanted = set(indices)
    built = {index: port.build(rows, index) for index, rows in enumerate(port.plan(0)) if index in wanted}
    return [built[index] for index in indices]


def check_training(run: Any) -> TrainingParity:
    """The port side of training parity against a recorded legacy run (`parity.record.LegacyRun`):
    the same K batches built by the port's own pipeline, K steps from the recorded weights."""
    recorded = run.training
    settings = recorded.settings
    config = _dropout_free(QaracConfig(base=run.meta["model_config"]).legacy())
    model_dir = Path(run.meta.get("model_files") or run.meta["model"])
    batches = port_pipeline_batches(model_dir, config, settings["batch_indices"], settings["batch_size"],
                                    settings["seed"])
    identical = all(_same_batch(batch, arrays) for batch, arrays in zip(batches, recorded.batches))
    state = {name: torch.from_numpy(np.array(value)) for name, value in run.weights.items()}
    port, control = QaracTrainerModel(config), QaracTrainerModel(config)
    port.load_state_dict(state)
    control.load_state_dict(state)
    port_history = _port_run(port, batches, _keras_matched)
    control_history = _port_run(control, batches, _torch_default_nadam)
    result = TrainingParity(steps_run=settings["steps"], learning_rate=settings["learning_rate"],
                            tolerance=TRAINING_TOLERANCE, batch_size=settings["batch_size"],
                            batch_indices=list(settings["batch_indices"]),
                            ragged_batches_skipped=list(settings["ragged_batches_skipped"]), batches_identical=identical)
    for step, (legacy, pytorch) in enumerate(zip(recorded.eager, port_history)):
        result.steps.append({
            "step": step + 1, "legacy": legacy, "pytorch": pytorch,
            "abs_diff": {key: abs(legacy[key] - pytorch[key]) for key in ("total", *OBJECTIVES)},
            "legacy_graph_fit": recorded.graph[step], "pytorch_torch_default_nadam": control_history[step],
        })
    result.max_abs_diff = _max_diff(recorded.eager, port_history)
    result.legacy_graph_fit_max_abs_diff = _max_diff(recorded.graph, port_history)
    result.control_torch_default_nadam_max_abs_diff = _max_diff(recorded.eager, control_history)
    result.passed = result.batches_identical and result.max_abs_diff <= TRAINING_TOLERANCE
    return result


def training_parity(model_dir: Path, steps: int = 5, batch_size: int = 4, seed: int = 0) -> TrainingParity:
    """Run K steps on each side on the original's batches and compare the per-step losses (live).

    Args:
        batch_size: of the original's pipeline (32 in the original; smaller keeps the check fast).
        seed: the heads' initialisation and the pipeline's shuffles.
    """
    from types import SimpleNamespace

    training, weights = record_legacy_training(model_dir, steps, batch_size, seed)
    config = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    run = SimpleNamespace(training=training, weights=weights, meta={"model_config": dict(config.base),
                                                                   "model": str(model_dir)})
    return check_training(run)
