"""Resuming a run: the output directory checked before any work, the settings and data compared
with the run's, and the model, optimizer, scheduler and RNG states loaded from its checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from qarac.checkpoint import CheckpointError, read_checkpoint_record
from qarac.trainer import QaracTrainerModel
from qarac.training.checkpoints import (LATEST_NAME, TrainingState, checkpoint_order, corpus_digests,
                                        latest_checkpoint, list_checkpoints, load_training_state, read_state_json)
from qarac.training.config import TrainConfig
from qarac.training.run_dir import check_output_path, run_entries
from qarac.training.runtime import Runtime

logger = logging.getLogger(__name__)

# Settings a resumed run may change: where it stops, how often it saves, where and how fast it
# runs. Any other change would make the resumed run differ from the run it continues.
RESUMABLE_SETTINGS = frozenset({"output_dir", "epochs", "max_steps", "checkpoint_every", "keep_checkpoints",
                                "device", "bf16", "num_workers", "resume", "overwrite", "progress",
                                "compile", "optimizer", "pad_vocab"})
# Settings that name paths: equal when they resolve to the same place.
PATH_SETTINGS = frozenset({"model_dir", "tokenizer_dir", "data_dir"})


def changed_settings(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """`name old → new` for each setting outside RESUMABLE_SETTINGS that differs from the saved run's."""
    changes = []
    for field in dataclasses.fields(current):
        if field.name in RESUMABLE_SETTINGS:
            continue
        # The saved settings went through JSON (a tuple came back as a list): compare JSON forms.
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        old = json.loads(json.dumps(saved.get(field.name, default), default=str))
        new = json.loads(json.dumps(getattr(current, field.name), default=str))
        if field.name in PATH_SETTINGS and old is not None and new is not None:
            if Path(old).resolve() == Path(new).resolve():
                continue
        if old != new:
            changes.append(f"{field.name} {old} → {new}")
    return changes


def check_same_tokenizer(checkpoint: Path, tokenizer) -> None:
    """A resumed run tokenizes as the run did: same vocabulary and merges (by digest), wherever they come from."""
    from qarac.tokenizer import tokenizer_sha256

    recorded = read_checkpoint_record(checkpoint).get("tokenizer_sha256")
    if recorded is not None and tokenizer_sha256(tokenizer) != recorded:
        raise CheckpointError(f"{checkpoint} was trained with another tokenizer (tokenizer_sha256 differs); "
                              "resume with the run's tokenizer")


def check_output_dir(train_config: TrainConfig) -> Path | None:
    """Check the output directory before any work; the checkpoint to resume from, or None.

    Raises:
        ValueError: the path is a file, is not writable, or holds a run and
            neither --resume nor --overwrite was given.
        CheckpointError: --resume without a usable checkpoint, or with settings
            that differ from the checkpoint's (each listed, old → new).
    """
    output_dir = Path(train_config.output_dir)
    check_output_path(output_dir)
    if train_config.resume:
        checkpoint = latest_checkpoint(output_dir)
        saved = read_state_json(checkpoint).get("train_config", {})
        changes = changed_settings(saved, train_config)
        if changes:
            raise CheckpointError(f"the run in {output_dir} was trained with other settings: {'; '.join(changes)}; "
                                  f"resume with the run's settings (only {', '.join(sorted(RESUMABLE_SETTINGS - {'output_dir', 'resume', 'overwrite'}))} "
                                  "may change), or start a new run in another directory")
        edited = changed_corpora(read_state_json(checkpoint).get("data_sha256", {}), train_config.data_dir)
        if edited:
            raise CheckpointError(f"the corpora in {train_config.data_dir} changed since the run in {output_dir} "
                                  f"read them ({', '.join(edited)}: sha256 differs); resume on the run's data, "
                                  "or start a new run in another directory")
        return checkpoint
    found = run_entries(output_dir)
    if found and not train_config.overwrite:
        raise ValueError(f"{output_dir} already holds a training run ({', '.join(path.name for path in found)}); "
                         "continue it with --resume, or replace it with --overwrite")
    return None


def fallback_checkpoint(checkpoint: Path) -> Path | None:
    """The newest checkpoint older than `checkpoint` in its output directory, if one is kept."""
    older = [path for path in list_checkpoints(checkpoint.parent) if checkpoint_order(path) < checkpoint_order(checkpoint)]
    return older[-1] if older else None


def resume_from(checkpoint: Path, model: QaracTrainerModel, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, runtime: Runtime) -> TrainingState:
    """Load model, optimizer, scheduler and RNG states from `checkpoint`.

    Raises:
        CheckpointError: a corrupt checkpoint or another model config; the
            message names the older checkpoint kept as a fallback.
    """
    try:
        saved = QaracTrainerModel.from_pretrained(checkpoint)
        if saved.config != model.config:
            raise CheckpointError(f"{checkpoint} holds a model with another config (was --legacy the same?)")
        model.load_state_dict(saved.state_dict())
        state = load_training_state(checkpoint, optimizer, scheduler, runtime)
    except CheckpointError as error:
        fallback = fallback_checkpoint(checkpoint)
        if fallback is None:
            raise
        raise CheckpointError(f"{error}; the older checkpoint {fallback.name} is kept: write its name into "
                              f"{checkpoint.parent / LATEST_NAME} to resume from it") from error
    if runtime.is_main:
        logger.info("resuming from %s (step %d) in %s", checkpoint.name, state.step, checkpoint.parent)
    return state


def changed_corpora(saved: dict[str, str], data_dir: str | os.PathLike) -> list[str]:
    """The corpus files whose content differs from the run's (by sha256)."""
    now = corpus_digests(data_dir)
    return sorted(name for name in set(saved) | set(now) if saved.get(name) != now.get(name))
