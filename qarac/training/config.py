"""`TrainConfig`: everything one training run depends on, checked when it is made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from qarac.data.corpora import DEFAULT_DATA_DIR
from qarac.data.options import DataConfig, data_config_for
from qarac.optim import IMPLEMENTATIONS


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on.

    The optimizer and schedule defaults are the legacy's: Keras' Nadam defaults
    and `ExponentialDecay(1e-5, 100, 0.99)`.
    """

    output_dir: str  # checkpoints, loss history and plot go here
    model_dir: str | None = None  # local HF RoBERTa directory; None: the embedded tiny model
    tokenizer_dir: str | None = None  # None: the model directory's tokenizer, else the embedded one
    data_dir: str = str(DEFAULT_DATA_DIR)  # the four corpus CSVs
    epochs: int = 1  # passes over the data (ignored when max_steps is set)
    max_steps: int | None = None  # stop after this many optimizer steps in all
    batch_size: int = 16  # per process; the global batch is batch_size x world size
    seed: int = 0  # head initialisation, data order, dropout
    learning_rate: float = 1e-5  # ExponentialDecay initial_learning_rate
    decay_steps: int = 100  # ExponentialDecay decay_steps
    decay_rate: float = 0.99  # ExponentialDecay decay_rate
    staircase: bool = False  # ExponentialDecay staircase (floor the exponent)
    beta1: float = 0.9  # Keras Nadam beta_1
    beta2: float = 0.999  # Keras Nadam beta_2
    epsilon: float = 1e-7  # Keras Nadam epsilon (torch's default is 1e-8)
    checkpoint_every: int = 100  # steps between checkpoints; 0: only at the end
    device: str = "cpu"  # "cpu" or "cuda"
    bf16: bool = True  # bf16 autocast, on CUDA only
    legacy: bool = False  # QaracConfig.legacy(): every compatibility option as the legacy had it
    max_length: int = 128  # longest token sequence of any field
    data_preset: str = "default"  # data options: "default" or "legacy" (qarac.data.options.data_config_for)
    data_options: tuple[str, ...] = ()  # NAME=VALUE overrides of the preset's data options
    num_workers: int = 0  # DataLoader worker processes
    resume: bool = False  # continue from output_dir/latest
    overwrite: bool = False  # replace a run already in output_dir (its checkpoints, history and plot)
    keep_checkpoints: int = 2  # newest checkpoints kept: an older one is the fallback if the newest is corrupt
    progress: bool = True  # tqdm progress bar (rank 0)
    compile: bool = False  # torch.compile the forward + loss and the optimizer step
    optimizer: str = "foreach"  # KerasNadam implementation (qarac.optim): "single", "foreach" or "compiled"
    pad_vocab: int | None = None  # LM head product padded to this multiple; None: 64 on CUDA, none on CPU

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "decay_steps": self.decay_steps,
                    "max_length": self.max_length, "keep_checkpoints": self.keep_checkpoints}
        if self.max_steps is not None:
            positive["max_steps"] = self.max_steps
        bad = {name: value for name, value in positive.items() if value < 1}
        if bad:
            raise ValueError(f"these settings must be at least 1: {bad}")
        if self.checkpoint_every < 0 or self.num_workers < 0:
            raise ValueError("checkpoint_every and num_workers must be >= 0")
        # `not x > 0` and `not 0 <= x < 1` also catch NaN, which every comparison fails.
        for name in ("learning_rate", "decay_rate", "epsilon"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: continue the run in the output "
                             "directory, or replace it")
        if self.optimizer not in IMPLEMENTATIONS:
            raise ValueError(f"optimizer must be one of {IMPLEMENTATIONS}, got {self.optimizer!r}")
        if self.pad_vocab is not None and self.pad_vocab < 1:
            raise ValueError(f"pad_vocab must be at least 1, got {self.pad_vocab}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        self.data_config()  # a bad preset or option fails here, before any work

    def data_config(self) -> DataConfig:
        return data_config_for(self.data_preset, self.data_options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
