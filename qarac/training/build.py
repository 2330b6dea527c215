"""What a training run is built from: the tokenizer, the model, and the batches each process takes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch

from qarac.batch import QaracBatch
from qarac.config import QaracConfig
from qarac.data.batches import CorpusBatches
from qarac.trainer import QaracTrainerModel
from qarac.training.config import TrainConfig
from qarac.training.runtime import Runtime


def load_tokenizer_for(train_config: TrainConfig, model_dir: Path):
    from qarac.tokenizer import load_default_tokenizer, load_tokenizer

    if train_config.tokenizer_dir is not None:
        return load_tokenizer(train_config.tokenizer_dir)
    if (model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.json").is_file():
        return load_tokenizer(model_dir)
    return load_default_tokenizer()


def build_model(train_config: TrainConfig, model_dir: Path) -> QaracTrainerModel:
    """Both bases from `model_dir`, heads initialised from `seed`."""
    from qarac.base import config_for_base

    config = config_for_base(model_dir, None)
    config = config.legacy() if train_config.legacy else config.fixed()
    torch.manual_seed(train_config.seed)
    return QaracTrainerModel.from_base_model(model_dir, config)


def build_dataset(train_config: TrainConfig, tokenizer, config: QaracConfig) -> CorpusBatches:
    """The run's batches, every epoch to be run checked for ragged batches up front.

    Raises:
        ValueError: a tokenizer or max_length the model cannot take, or a ragged batch (legacy
            padding), where the original's fit stopped.
    """
    from qarac.tokenizer import check_tokenizer_fits

    check_tokenizer_fits(tokenizer, config.vocab_size)
    if train_config.max_length > config.max_tokens:
        raise ValueError(f"max_length {train_config.max_length} exceeds the model's {config.max_tokens} positions")
    dataset = CorpusBatches.from_directory(train_config.data_dir, tokenizer, train_config.data_config(),
                                           max_length=train_config.max_length,
                                           batch_size=train_config.batch_size, seed=train_config.seed)
    epochs = math.ceil(train_config.max_steps / len(dataset)) if train_config.max_steps else train_config.epochs
    for epoch in range(epochs):
        ragged = dataset.find_ragged(epoch)
        if ragged:
            raise ValueError(f"{len(ragged)} of {len(dataset)} batches of epoch {epoch} are ragged with "
                             f"padding=corpus, as the original's were (its fit stopped at the first): "
                             f"{ragged[0].explain()}; train with --data-option padding=corpus_fit")
    return dataset


def epoch_batches(dataset: CorpusBatches, train_config: TrainConfig, runtime: Runtime,
                  epoch: int, position: int) -> Iterator[QaracBatch]:
    """This rank's batches of `epoch`, from batch number `position` on."""
    return iter(dataset.loader(epoch, position, runtime.rank, runtime.world_size, num_workers=train_config.num_workers,
                               pin_memory=runtime.device.type == "cuda"))


def steps_per_epoch(dataset: CorpusBatches, runtime: Runtime) -> int:
    """Batches of an epoch for each rank."""
    return len(dataset.plan(0, runtime.rank, runtime.world_size))
