"""The training loop: one process or DDP under torchrun, checkpointed, resumable, stoppable."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from qarac.losses import QaracLoss
from qarac.objectives import OBJECTIVES
from qarac.trainer import QaracTrainerModel
from qarac.training.build import build_dataset, build_model, epoch_batches, load_tokenizer_for, steps_per_epoch
from qarac.training.checkpoints import TrainingState, save_checkpoint
from qarac.training.config import TrainConfig
from qarac.training.history import write_history
from qarac.training.loss_step import make_loss_step
from qarac.training.optimizer import make_optimizer, make_scheduler
from qarac.training.resume import check_output_dir, check_same_tokenizer, resume_from
from qarac.training.rng import gather_rng
from qarac.training.run_dir import check_output_path, remove_run, remove_stale
from qarac.training.run_lock import RunLock
from qarac.training.runtime import Runtime, reduce_losses, setup_runtime, wrap_distributed
from qarac.training.signals import StopSignals, TrainingInterrupted
from qarac.vocab_padding import pad_vocabulary_products, padding_multiple_for


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


@dataclass
class TrainResult:
    """The trained model (this rank's copy, unwrapped) and where training stopped."""

    model: QaracTrainerModel
    state: TrainingState


def train(train_config: TrainConfig) -> TrainResult:
    """Train (or resume training) and checkpoint.

    The output directory and the settings to resume with are checked before
    any work; a run already there is replaced only with `overwrite`. The main
    process holds the directory's `RunLock` throughout: a second run into it is refused.

    Raises:
        CheckpointError: bad model directory or checkpoint, or a resume with changed settings.
        qarac.data.corpora.DataError: unreadable corpus file.
        ValueError: inconsistent settings, an output directory that holds a run, or
            one another training process is writing (`RunLock`).
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint was saved first.
    """
    runtime = setup_runtime(train_config)
    check_output_path(Path(train_config.output_dir))
    # One writer per run directory, from before the first check of what it holds to the last write.
    with RunLock(train_config.output_dir) if runtime.is_main else contextlib.nullcontext():
        return _train(train_config, runtime)


def _train(train_config: TrainConfig, runtime: Runtime) -> TrainResult:
    from qarac.presets import tiny_model_dir
    from qarac.validation import skip_value_checks

    output_dir = Path(train_config.output_dir)
    checkpoint = check_output_dir(train_config)
    model_dir = Path(train_config.model_dir) if train_config.model_dir else tiny_model_dir()
    model = build_model(train_config, model_dir)
    tokenizer = load_tokenizer_for(train_config, model_dir)
    if checkpoint is not None:
        check_same_tokenizer(checkpoint, tokenizer)
    dataset = build_dataset(train_config, tokenizer, model.config)
    loss_fn = QaracLoss(model.config)
    optimizer = make_optimizer(model, train_config)
    scheduler = make_scheduler(optimizer, train_config)
    torch.manual_seed(train_config.seed + runtime.rank)  # each rank its own dropout masks
    state = TrainingState()
    if checkpoint is not None:
        state = resume_from(checkpoint, model, optimizer, scheduler, runtime)
    if runtime.is_main and train_config.overwrite:  # everything is checked: only now may the old run go
        remove_run(output_dir)
    elif runtime.is_main:
        remove_stale(output_dir)
    model.to(runtime.device).train()
    pad_vocabulary_products(model, padding_multiple_for(runtime.device.type, train_config.pad_vocab))
    ddp_model = wrap_distributed(model, runtime)
    loss_step = make_loss_step(ddp_model, loss_fn, train_config, runtime)
    per_epoch = steps_per_epoch(dataset, runtime)
    total = train_config.max_steps or train_config.epochs * per_epoch
    autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                              enabled=runtime.device.type == "cuda" and train_config.bf16)

    def save() -> None:
        rng_states = gather_rng(runtime)
        if runtime.is_main:
            save_checkpoint(output_dir, model, tokenizer, optimizer, scheduler, state, rng_states, train_config)
            write_history(output_dir, state.history)
        if runtime.distributed:
            dist.barrier()

    # The batches come from qarac.data, whose ids check_tokenizer_fits bounded: the per-call
    # value checks would only add a host-device sync per step.
    with _progress(total, state.step, train_config.progress and runtime.is_main) as bar, \
            StopSignals() as signals, skip_value_checks():
        batches = epoch_batches(dataset, train_config, runtime, state.epoch, state.position)
        while state.step < total:
            batch = next(batches, None)
            if batch is None:  # end of epoch: the next one's order comes from (seed, epoch)
                state.epoch, state.position = state.epoch + 1, 0
                batches = epoch_batches(dataset, train_config, runtime, state.epoch, 0)
                continue
            batch = batch.to(runtime.device, non_blocking=True)
            lr = scheduler.get_last_lr()[0]
            with autocast:
                losses = loss_step(batch.inputs, batch.targets)
            losses.total.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step, state.position = state.step + 1, state.position + 1
            record = {"step": state.step, **reduce_losses(losses.item(), runtime), "lr": lr}
            state.history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({name[:8]: f"{record[name]:.3f}" for name in (*OBJECTIVES, "total")})
            if signals.requested(runtime):
                save()
                raise TrainingInterrupted(signals.received or "a signal to another rank", state.step, output_dir)
            if train_config.checkpoint_every and state.step % train_config.checkpoint_every == 0 \
                    and state.step < total:
                save()
    save()
    return TrainResult(model, state)
