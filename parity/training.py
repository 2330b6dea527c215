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
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parity.inputs import tokenizer_for
from qarac import QaracConfig, QaracLoss, QaracTrainerModel
from qarac.data.batches import CorpusBatches
from qarac.data.corpora import DEFAULT_DATA_DIR
from qarac.data.options import DataConfig
from qarac.losses import OBJECTIVES
from qarac.training.config import TrainConfig
from qarac.training.optimizer import make_optimizer, make_scheduler

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
    """The port side of training parity against a recorded legacy run (`parity.results.LegacyRun`):
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
