"""The legacy side of training parity: K steps of the legacy's `fit` on the first K rectangular
batches of epoch 0 of the original's input pipeline, as data (`parity.results.LegacyTraining`).

The batches are built twice, the legacy side by `legacy_keras.pipeline` and the port side by
`qarac.data`'s legacy data preset, each with its own code; `parity.training` checks the port
against the recorded losses and says whether the two sides' batches were identical.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from legacy_keras._tf import keras
from legacy_keras.build import DECAY_RATE, DECAY_STEPS, build_trainer, legacy_losses
from legacy_keras.pipeline import CombinedCorpus, RaggedBatchError, legacy_tokenizer
from parity import bridge
from parity.inputs import tokenizer_for
from parity.results import LegacyTraining
from parity.training import PARITY_LEARNING_RATE
from qarac import QaracConfig, QaracTrainerModel
from qarac.checkpoint import read_roberta_config
from qarac.data.batches import CorpusBatches
from qarac.data.corpora import DEFAULT_DATA_DIR
from qarac.data.options import DataConfig
from qarac.objectives import OBJECTIVES


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
    schedule = keras.optimizers.schedules.ExponentialDecay(PARITY_LEARNING_RATE, DECAY_STEPS, DECAY_RATE)
    trainer.compile(optimizer=keras.optimizers.Nadam(learning_rate=schedule), loss=legacy_losses(),
                    run_eagerly=run_eagerly)
    history = []
    for inputs, targets in batches:
        logs = trainer.train_on_batch(inputs, targets, return_dict=True)
        history.append({"total": float(logs["loss"]), **{name: float(logs[f"{name}_loss"]) for name in OBJECTIVES}})
    return history


def _legacy_arrays(x: dict, y: dict) -> dict[str, np.ndarray]:
    """One legacy pipeline batch (TF tensors) as named arrays."""
    arrays = {}
    for name, tokens in x.items():
        arrays[f"x/{name}/input_ids"] = np.asarray(tokens["input_ids"])
        arrays[f"x/{name}/attention_mask"] = np.asarray(tokens["attention_mask"])
    for name in ("encode_decode", "reasoning", "consistency"):
        arrays[f"y/{name}"] = np.asarray(y[name])
    return arrays


def record_legacy_training(model_dir: Path, steps: int = 5, batch_size: int = 4, seed: int = 0,
                           expected_weights: dict[str, np.ndarray] | None = None):
    """The legacy side of training parity: K steps of `fit(run_eagerly=True)` and of the traced `fit`
    on the original's batches, as data.

    Args:
        expected_weights: the weights the rest of the run recorded; training must start from them.

    Returns: (`parity.results.LegacyTraining`, the starting weights by PyTorch name).
    """
    if steps < 1:
        raise ValueError(f"training parity needs at least one step, got {steps}")
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
