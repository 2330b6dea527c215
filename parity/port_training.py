"""The port's side of training parity (`parity.training`): K optimizer steps of its legacy preset
from the recorded weights, on the batches its own pipeline builds, once with the Keras-matched
optimizer and once with torch's default NAdam (the control).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parity.inputs import tokenizer_for
from parity.results import PortTraining
from parity.training import PARITY_LEARNING_RATE, TrainingParity, compare_training
from qarac import QaracConfig, QaracLoss, QaracTrainerModel
from qarac.data.batches import CorpusBatches
from qarac.data.corpora import DEFAULT_DATA_DIR
from qarac.data.options import DataConfig
from qarac.training.config import TrainConfig
from qarac.training.optimizer import make_optimizer, make_scheduler


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


def batch_arrays(batch: Any) -> dict[str, np.ndarray]:
    """A port batch as the legacy records its pipeline's (`LegacyTraining.batches`' keys)."""
    arrays = {}
    for name, tokens in batch.inputs.items():
        arrays[f"x/{name}/input_ids"] = tokens.input_ids.cpu().numpy()
        arrays[f"x/{name}/attention_mask"] = tokens.attention_mask.cpu().numpy()
    arrays.update({f"y/{name}": batch.targets[name].input_ids.cpu().numpy() for name in ("encode_decode", "reasoning")})
    arrays["y/consistency"] = batch.targets["consistency"].cpu().numpy()
    return arrays


def _dropout_free(config: QaracConfig) -> QaracConfig:
    return config.replace(base={**config.base, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})


def port_pipeline_batches(model_dir: Path, config: QaracConfig, indices: list[int], batch_size: int, seed: int,
                          data_dir: Path = DEFAULT_DATA_DIR) -> list[Any]:
    """Batches `indices` of epoch 0 of the original's pipeline, as the port's legacy data preset builds them."""
    data_config = dataclasses.replace(DataConfig().legacy(), batch_size=batch_size)
    port = CorpusBatches.from_directory(data_dir, tokenizer_for(model_dir, config), data_config,
                                        max_length=config.max_tokens, seed=seed)
    wanted = set(indices)
    built = {index: port.build(rows, index) for index, rows in enumerate(port.plan(0)) if index in wanted}
    return [built[index] for index in indices]


def train_port(run: Any) -> PortTraining:
    """The port's K steps on a recorded legacy run's training settings (`parity.results.LegacyRun`):
    the same K batches built by the port's own pipeline, K steps from the recorded weights."""
    settings = run.training.settings
    config = _dropout_free(QaracConfig(base=run.meta["model_config"]).legacy())
    model_dir = Path(run.meta.get("model_files") or run.meta["model"])
    batches = port_pipeline_batches(model_dir, config, settings["batch_indices"], settings["batch_size"],
                                    settings["seed"])
    state = {name: torch.from_numpy(np.array(value)) for name, value in run.weights.items()}
    port, control = QaracTrainerModel(config), QaracTrainerModel(config)
    port.load_state_dict(state)
    control.load_state_dict(state)
    return PortTraining([batch_arrays(batch) for batch in batches], _port_run(port, batches, _keras_matched),
                        _port_run(control, batches, _torch_default_nadam))


def check_training(run: Any) -> TrainingParity:
    """Training parity of the port against a recorded legacy run: `train_port`, then `compare_training`."""
    return compare_training(run.training, train_port(run))
