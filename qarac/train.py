"""Training QARAC: `TrainConfig`, the optimizer and schedule matched to the
legacy Keras ones, resumable checkpoints, and the training loop (one process or
DDP under torchrun).

The legacy trained with Keras `compile`/`fit`, Nadam and an `ExponentialDecay`
learning rate (1e-5, 100 steps, rate 0.99). `make_optimizer` and
`make_scheduler` reproduce both (docs/optimizer.md gives the formulas).

A checkpoint directory `output/checkpoint-STEP/` holds:

    model.safetensors, qarac_config.json   the QaracTrainerModel (save_pretrained)
    tokenizer files                        so `qarac encode`/`generate` need nothing else
    training_state.safetensors             optimizer moments, RNG states (tensors)
    training_state.json                    step, epoch, position in the epoch,
                                           optimizer groups, scheduler, RNG scalars,
                                           the TrainConfig and the loss history

It is assembled in a hidden directory beside it and renamed to a name no
directory has (a step saved again gets `checkpoint-STEP-K`), then
`output/latest` (the name of the newest checkpoint) is replaced atomically, and
only then are checkpoints past `keep_checkpoints` removed: a kill at any point
leaves a complete checkpoint that `latest` names (`save_checkpoint`). What
interrupted saves leave is removed at the next start (`remove_stale`). A
directory holding a run is continued only with `resume` (same settings,
`changed_settings`) and replaced only with `overwrite`. Nothing is pickled;
resuming reads safetensors and JSON only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler

from qarac import _hf  # noqa: F401
from qarac.batch import QaracBatch
from qarac.checkpoint import (CheckpointError, atomic_write, atomic_write_text, load_safetensors,
                              read_checkpoint_record, sha256_of)
from qarac.config import QaracConfig
from qarac.data import (DEFAULT_DATA_DIR, CorpusBatches, DataConfig, QaracDataset, data_config_for,
                        make_dataloader)
from qarac.losses import LossBreakdown, QaracLoss
from qarac.optim import IMPLEMENTATIONS, KerasNadam
from qarac.trainer import QaracTrainerModel
from qarac.vocab_padding import pad_vocabulary_products, padding_multiple_for

LATEST_NAME = "latest"
CHECKPOINT_PREFIX = "checkpoint-"
# checkpoint-STEP, or checkpoint-STEP-K for the K-th re-save of one step.
CHECKPOINT_PATTERN = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)(?:-(\d+))?")
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
HISTORY_NAME = "loss_history.json"
PLOT_NAME = "loss_curve.png"
STATE_FORMAT_VERSION = 1
logger = logging.getLogger(__name__)
OBJECTIVES = ("encode_decode", "question_answering", "reasoning", "consistency")


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
    data_preset: str = "default"  # data options: "default" or "legacy" (qarac.data.data_config_for)
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


# --- optimizer and schedule ------------------------------------------------------

def make_optimizer(model: nn.Module, train_config: TrainConfig) -> KerasNadam:
    """torch's NAdam set to compute Keras' (tf-keras 2.21) Nadam update, as one multi-tensor step.

    `momentum_decay=1.0`: torch's momentum schedule is beta1 (1 - 0.5 0.96^(t psi)),
    Keras' is beta1 (1 - 0.5 0.96^t). `eps` is added to sqrt(v_hat) by both;
    Keras' default is 1e-7. Both count steps from t = 1. See docs/optimizer.md.
    """
    return KerasNadam(model.parameters(), lr=train_config.learning_rate,
                      betas=(train_config.beta1, train_config.beta2), eps=train_config.epsilon,
                      implementation=optimizer_implementation(train_config))


def optimizer_implementation(train_config: TrainConfig) -> str:
    """`train_config.optimizer`, with the default multi-tensor step compiled under `compile`."""
    if train_config.compile and train_config.optimizer == "foreach":
        return "compiled"
    return train_config.optimizer


def compile_mode(train_config: TrainConfig, runtime: "Runtime") -> str | None:
    """torch.compile's mode for the forward + loss: CUDA graphs ("reduce-overhead") on one CUDA
    device when every batch has one shape (`padding=corpus_fit` pads each field to its corpus
    length), else the default (shapes vary from batch to batch; graphs would be recorded per shape)."""
    fixed_shapes = train_config.data_config().padding == "corpus_fit"
    if runtime.device.type == "cuda" and fixed_shapes and not runtime.distributed:
        return "reduce-overhead"
    return None


def make_loss_step(model: nn.Module, loss_fn: QaracLoss, train_config: TrainConfig, runtime: "Runtime"):
    """(inputs, targets) -> LossBreakdown: the forward and the loss, compiled under `compile`."""
    def forward_and_loss(inputs, targets) -> dict[str, torch.Tensor]:
        return loss_fn(model(inputs), targets).as_dict()

    if not train_config.compile:
        return lambda inputs, targets: LossBreakdown(**forward_and_loss(inputs, targets))
    mode = compile_mode(train_config, runtime)
    if train_config.data_config().padding != "corpus_fit" and runtime.is_main:
        # Measured at mid size on CPU: 10.7 s a step against 0.6-0.9 s eager (bench/README.md section 10).
        logger.warning("--compile with per-batch padding: every new combination of field lengths is compiled "
                       "again; --data-option padding=corpus_fit gives every batch one shape")
    compiled = torch.compile(forward_and_loss, mode=mode)

    def step(inputs, targets) -> LossBreakdown:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are done with
        return LossBreakdown(**compiled(inputs, targets))

    return step


def exponential_decay(step: int, decay_steps: int, decay_rate: float, staircase: bool = False) -> float:
    """Keras `ExponentialDecay`'s factor: rate ** (step / decay_steps), the exponent floored if staircase."""
    exponent = step / decay_steps
    if staircase:
        exponent = math.floor(exponent)
    return decay_rate ** exponent


def make_scheduler(optimizer: torch.optim.Optimizer, train_config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Keras `ExponentialDecay(learning_rate, decay_steps, decay_rate, staircase)` as a LambdaLR.

    Keras evaluates the schedule at `optimizer.iterations` before it is
    incremented, so update k (0-based) uses lr(k); LambdaLR has been stepped k
    times before update k, so its factor at k is the same.
    """
    def factor(step: int) -> float:
        return exponential_decay(step, train_config.decay_steps, train_config.decay_rate, train_config.staircase)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- distributed set-up -------------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its device and its place among the processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(train_config: TrainConfig) -> Runtime:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA).

    Raises:
        ValueError: `device="cuda"` without a CUDA device.
    """
    if train_config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch finds no CUDA device; use --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Runtime(torch.device(train_config.device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if train_config.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def wrap_distributed(model: QaracTrainerModel, runtime: Runtime) -> nn.Module:
    """DDP around the model when there are several processes.

    `find_unused_parameters` is needed only with the legacy pooler: RoBERTa's
    pooler is never used by QARAC, so its parameters get no gradient, and DDP
    without the flag waits for their all-reduce forever (it raises at the next
    step). The default config drops the pooler, every parameter gets a
    gradient, and DDP skips the costly search for unused parameters.
    """
    if not runtime.distributed:
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=model.config.keep_pooler)


# --- data order ----------------------------------------------------------------------

class ResumeSampler(Sampler[int]):
    """A `DistributedSampler`'s epoch order, starting `skip` examples in.

    The order depends on (seed, epoch) only, so a resumed run finds the very
    batch where the interrupted one stopped.
    """

    def __init__(self, sampler: DistributedSampler, skip: int = 0):
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


def epoch_batches(dataset: QaracDataset | CorpusBatches, train_config: TrainConfig, runtime: Runtime,
                  epoch: int, position: int) -> Iterator[QaracBatch]:
    """This rank's batches of `epoch`, from batch number `position` on."""
    if isinstance(dataset, CorpusBatches):
        if runtime.distributed:
            raise ValueError("non-default data options (--data-preset / --data-option) train in one process; "
                             "run without torchrun, or with the default data options")
        return dataset.batches(epoch, position)
    sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank,
                                 shuffle=True, seed=train_config.seed)
    sampler.set_epoch(epoch)
    loader = make_dataloader(dataset, train_config.batch_size, shuffle=False, seed=train_config.seed,
                             sampler=ResumeSampler(sampler, position * train_config.batch_size),
                             num_workers=train_config.num_workers,
                             pin_memory=runtime.device.type == "cuda")
    return iter(loader)


def steps_per_epoch(dataset: QaracDataset | CorpusBatches, train_config: TrainConfig, runtime: Runtime) -> int:
    if isinstance(dataset, CorpusBatches):
        return len(dataset)
    per_rank = math.ceil(len(dataset) / runtime.world_size)
    return math.ceil(per_rank / train_config.batch_size)


# --- RNG state --------------------------------------------------------------------------

def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of the torch (CPU and CUDA), python `random` and numpy RNG states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    scalars = {"python": [version, list(internal), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, scalars


def restore_rng(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = scalars["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def gather_rng(runtime: Runtime) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Every rank's RNG states, in rank order (each rank draws its own dropout masks)."""
    mine = capture_rng()
    if not runtime.distributed:
        return [mine]
    gathered: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(gathered, mine)  # in-memory exchange only; files never hold pickles
    return gathered


# --- checkpoints -------------------------------------------------------------------------

@dataclass
class TrainingState:
    """Where training stands: `step` optimizer steps done; the next batch is
    number `position` of epoch `epoch`."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict as safetensors-ready tensors and JSON."""
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{key}": value.detach().cpu().contiguous()
               for index, entry in state["state"].items() for key, value in entry.items()}
    groups = [{key: list(value) if isinstance(value, tuple) else value for key, value in group.items()}
              for group in state["param_groups"]]
    return tensors, {"param_groups": groups}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    groups = [{key: tuple(value) if key == "betas" else value for key, value in group.items()}
              for group in data["param_groups"]]
    return {"state": state, "param_groups": groups}


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_order(directory: Path) -> tuple[int, int] | None:
    """(step, re-save number) of a checkpoint directory's name, None for other names.

    A step saved again (resuming a finished run) gets a new name, `checkpoint-STEP-K`:
    the checkpoint `latest` names is never replaced in place.
    """
    match = CHECKPOINT_PATTERN.fullmatch(directory.name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoint directories in `output_dir`, oldest (lowest step) first."""
    found = [path for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
             if path.is_dir() and checkpoint_order(path) is not None]
    return sorted(found, key=checkpoint_order)


def _unused_checkpoint_path(output_dir: Path, step: int) -> Path:
    path, resave = output_dir / checkpoint_name(step), 0
    while path.exists():
        resave += 1
        path = output_dir / f"{checkpoint_name(step)}-{resave}"
    return path


def _remove_directory(directory: Path) -> None:
    """Rename to a hidden name first (one atomic step), then delete: a kill while deleting
    leaves a hidden directory that `remove_stale` clears, never a half checkpoint."""
    doomed = directory.with_name(f".{directory.name}.removing")
    os.replace(directory, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune_checkpoints(output_dir: Path, newest: Path, keep: int) -> None:
    """Keep `newest` and the `keep - 1` checkpoints of the highest steps below it; remove
    older ones and any earlier save of `newest`'s step. Checkpoints past `newest` (a run
    resumed from a fallback) are left alone."""
    step = checkpoint_order(newest)[0]
    older = [path for path in list_checkpoints(output_dir) if checkpoint_order(path)[0] < step]
    superseded = [path for path in list_checkpoints(output_dir)
                  if checkpoint_order(path)[0] == step and path != newest]
    for path in superseded + older[:max(len(older) - (keep - 1), 0)]:
        _remove_directory(path)


def save_checkpoint(output_dir: Path, model: QaracTrainerModel, tokenizer, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, state: TrainingState,
                    rng_states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
                    train_config: TrainConfig) -> Path:
    """Write a new checkpoint directory, point `latest` at it, then drop old ones.

    The sequence: assemble it in a hidden staging directory; rename that to a
    name no directory has (a re-saved step gets `checkpoint-STEP-K`); switch
    `latest` atomically; remove the checkpoints past `keep_checkpoints`. A kill
    between any two of these leaves `latest` naming a complete checkpoint.

    Returns:
        The checkpoint directory.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{checkpoint_name(state.step)}.", dir=output_dir))
    staging.chmod(_directory_mode())
    try:
        model.save_pretrained(staging, tokenizer=tokenizer)  # qarac_config.json: the files' and tokenizer's digests
        tensors, optimizer_json = _optimizer_to_flat(optimizer)
        rng_json = []
        for rank, (rng_tensors, rng_scalars) in enumerate(rng_states):
            tensors.update({f"rank{rank}.{name}": value for name, value in rng_tensors.items()})
            rng_json.append(rng_scalars)
        # Through atomic_write for its permissions: safetensors creates files 0600.
        atomic_write(staging / STATE_TENSORS, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
        scheduler_state = scheduler.state_dict()  # lr_lambdas is [None]: functions are not saved
        payload = {"format_version": STATE_FORMAT_VERSION, "step": state.step, "epoch": state.epoch,
                   "position": state.position, "world_size": len(rng_states), "optimizer": optimizer_json,
                   "scheduler": scheduler_state, "rng": rng_json, "train_config": train_config.to_dict(),
                   "history": state.history, "files": {STATE_TENSORS: sha256_of(staging / STATE_TENSORS)},
                   "data_sha256": corpus_digests(train_config.data_dir)}
        (staging / STATE_JSON).write_text(json.dumps(payload, indent=1), encoding="utf-8")
        final = _unused_checkpoint_path(output_dir, state.step)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write_text(output_dir / LATEST_NAME, final.name)
    prune_checkpoints(output_dir, final, train_config.keep_checkpoints)
    return final


def _directory_mode() -> int:
    """0777 less the umask: what `mkdir` would give (`mkdtemp` gives 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def latest_checkpoint(output_dir: str | os.PathLike) -> Path:
    """The checkpoint `output_dir/latest` names.

    Raises:
        CheckpointError: no `latest` file, one that does not hold a checkpoint
            name, or one naming a missing directory.
    """
    output_dir = Path(output_dir)
    pointer = output_dir / LATEST_NAME
    if not pointer.is_file():
        found = [path.name for path in list_checkpoints(output_dir)] if output_dir.is_dir() else []
        if found:
            raise CheckpointError(f"no checkpoint to resume in {output_dir}: {LATEST_NAME} is missing, but the "
                                  f"directory holds {', '.join(found)}; write the name of the one to resume "
                                  f"from into {pointer}")
        raise CheckpointError(f"no checkpoint to resume in {output_dir}: {LATEST_NAME} is missing and the "
                              "directory holds no checkpoint")
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{pointer} is unreadable ({error}); it should hold a checkpoint name") from None
    # The whole text must be a name (no "../other-run/"): `latest` names a checkpoint of its own run.
    if CHECKPOINT_PATTERN.fullmatch(name) is None:
        raise CheckpointError(f"{pointer} holds {name[:60]!r}, not a checkpoint name like "
                              f"{checkpoint_name(0)!r}; write the name of a checkpoint directory into it")
    directory = output_dir / name
    if not directory.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which does not exist")
    if directory.resolve().parent != output_dir.resolve():
        raise CheckpointError(f"{pointer} names {name}, a link to {directory.resolve()} outside {output_dir}; "
                              "`latest` may only name a checkpoint of its own run")
    return directory


def saved_train_config(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The settings the run in `output_dir` recorded in its latest checkpoint."""
    saved = _read_state_json(latest_checkpoint(output_dir)).get("train_config", {})
    return saved if isinstance(saved, dict) else {}


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a training output directory (its `latest`)."""
    path = Path(path)
    if (path / LATEST_NAME).is_file():
        return latest_checkpoint(path)
    return path


# --- the output directory ------------------------------------------------------------------

# Held (flock) by the one process writing a run directory, and removed by it when it ends. A
# holder killed outright leaves the file, unlocked: the next taker locks it again (stale-lock
# recovery). Its text names the holder for the message a second writer gets.
LOCK_NAME = ".train.lock"


class RunLock:
    """One writer per training output directory: an exclusive `flock` on `output_dir/.train.lock`.

    The kernel releases the lock when its holder exits, however it exits (kill -9 included), so a
    lock file left by a dead process is simply taken again; its text (pid, host, start time) only
    names the holder in the refusal. The holder removes the file while still holding it, so a
    taker that locked the file just as it was removed finds its path gone (or another inode
    there) and tries again: two takers never hold two different files. Directories the lock
    created are removed again when the run leaves them empty (a run refused before its first save).

    Raises (on entering):
        ValueError: another process holds the lock (the message names it), or the directory or
            the lock file cannot be created (the message gives the system's reason).
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_NAME
        self._handle = None
        self._created: list[Path] = []

    def __enter__(self) -> "RunLock":
        import socket
        import time

        self._make_directory()
        handle = self._take()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        handle.flush()
        self._handle = handle
        return self

    def _make_directory(self) -> None:
        directory = self.path.parent.absolute()
        missing = [directory, *directory.parents]
        missing = [path for path in missing if not path.exists()]
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--output {self.path.parent}: cannot create it ({error.strerror or error})") from None
        self._created = missing  # deepest first: the order to remove them in

    def _take(self):
        import fcntl

        while True:
            try:
                handle = open(self.path, "a+", encoding="utf-8")
            except OSError as error:
                self._remove_created()
                raise ValueError(f"--output {self.path.parent}: cannot create files in it "
                                 f"({error.strerror or error})") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "a process that has not written its name yet"
                handle.close()
                raise ValueError(f"--output {self.path.parent} is in use by another training run ({holder}); "
                                 "wait for it to end, or train into another directory") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                handle.seek(0)
                handle.truncate()
                return handle
            handle.close()  # the holder removed this file as it ended: lock the one now there

    def _remove_created(self) -> None:
        for directory in self._created:
            try:
                directory.rmdir()
            except OSError:  # not empty: the run wrote there, or someone else did
                return

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)  # while still held: see the class docstring
            self._handle.close()  # closing releases the flock
            self._handle = None
            self._remove_created()


# Settings a resumed run may change: where it stops, how often it saves, where and how fast it
# runs. Any other change would make the resumed run differ from the run it continues.
RESUMABLE_SETTINGS = frozenset({"output_dir", "epochs", "max_steps", "checkpoint_every", "keep_checkpoints",
                                "device", "bf16", "num_workers", "resume", "overwrite", "progress",
                                "compile", "optimizer", "pad_vocab"})
# Settings that name paths: equal when they resolve to the same place.
PATH_SETTINGS = frozenset({"model_dir", "tokenizer_dir", "data_dir"})


def stale_entries(output_dir: Path) -> list[Path]:
    """What interrupted saves left in `output_dir`: hidden staging or half-removed checkpoint
    directories (`.checkpoint-*`) and the temporary files of `latest`, the history and the plot."""
    if not output_dir.is_dir():
        return []
    directories = [path for path in output_dir.glob(f".{CHECKPOINT_PREFIX}*") if path.is_dir()]
    files = [path for name in (LATEST_NAME, HISTORY_NAME, PLOT_NAME)
             for path in output_dir.glob(f".{name}.*.tmp") if path.is_file()]
    return sorted(directories + files)


def remove_stale(output_dir: Path) -> None:
    for path in stale_entries(output_dir):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run_entries(output_dir: Path) -> list[Path]:
    """What a training run wrote into `output_dir` (empty when it holds none)."""
    if not output_dir.is_dir():
        return []
    named = [output_dir / name for name in (LATEST_NAME, HISTORY_NAME, PLOT_NAME) if (output_dir / name).exists()]
    return named + list_checkpoints(output_dir)


def remove_run(output_dir: Path) -> None:
    """Delete the run in `output_dir` (`--overwrite`), `latest` first: a kill half-way
    leaves checkpoints without `latest`, which is refused without --overwrite again."""
    for path in run_entries(output_dir):
        if path.is_dir():
            _remove_directory(path)
        else:
            path.unlink()
    remove_stale(output_dir)


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


def check_output_path(output_dir: Path) -> None:
    """`output_dir` is, or can be made, a directory: checked before the lock file is created in it.

    Raises:
        ValueError: it is a file, or the nearest existing directory above it is not writable.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir} is a file; name a directory for the checkpoints")
    existing = next(parent for parent in (output_dir, *output_dir.absolute().parents) if parent.exists())
    if not existing.is_dir():
        raise ValueError(f"--output {output_dir}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):  # root passes this: RunLock's own writes are the real probe
        raise ValueError(f"--output {output_dir}: cannot write into {existing}")


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
        saved = _read_state_json(checkpoint).get("train_config", {})
        changes = changed_settings(saved, train_config)
        if changes:
            raise CheckpointError(f"the run in {output_dir} was trained with other settings: {'; '.join(changes)}; "
                                  f"resume with the run's settings (only {', '.join(sorted(RESUMABLE_SETTINGS - {'output_dir', 'resume', 'overwrite'}))} "
                                  "may change), or start a new run in another directory")
        edited = changed_corpora(_read_state_json(checkpoint).get("data_sha256", {}), train_config.data_dir)
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


def _read_state_json(directory: Path) -> dict[str, Any]:
    path = directory / STATE_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is missing or corrupt: {error}") from error


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


def _verify_state_files(directory: Path, payload: dict[str, Any]) -> None:
    """training_state.safetensors is the file training_state.json was saved with (sha256)."""
    expected = payload.get("files", {}).get(STATE_TENSORS) if isinstance(payload.get("files"), dict) else None
    path = directory / STATE_TENSORS
    if expected is None:
        raise CheckpointError(f"{directory / STATE_JSON} lists no digest of {STATE_TENSORS} (saved by an older qarac?)")
    if path.is_file() and sha256_of(path) != expected:
        raise CheckpointError(f"{path} was changed after saving (sha256 differs from the one in {STATE_JSON})")


def corpus_digests(data_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of each corpus file: a resumed run must read the data the run read, wherever it lies."""
    from qarac.data import CORPUS_COLUMNS

    digests = {}
    for name in CORPUS_COLUMNS:
        path = Path(data_dir) / f"{name}.csv"
        digests[path.name] = sha256_of(path) if path.is_file() else "missing"
    return digests


def changed_corpora(saved: dict[str, str], data_dir: str | os.PathLike) -> list[str]:
    """The corpus files whose content differs from the run's (by sha256)."""
    now = corpus_digests(data_dir)
    return sorted(name for name in set(saved) | set(now) if saved.get(name) != now.get(name))


def load_training_state(directory: Path, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, runtime: Runtime) -> TrainingState:
    """Restore optimizer, scheduler and this rank's RNG from a checkpoint.

    Raises:
        CheckpointError: missing or corrupt state files, or another world size.
    """
    payload = _read_state_json(directory)
    _verify_state_files(directory, payload)
    if payload["world_size"] != runtime.world_size:
        raise CheckpointError(f"{directory} was written by {payload['world_size']} processes, this run has "
                              f"{runtime.world_size}; resume with the same --nproc-per-node")
    tensors = load_safetensors(directory / STATE_TENSORS)
    optimizer.load_state_dict(_optimizer_from_flat(tensors, payload["optimizer"]))
    scheduler.load_state_dict(payload["scheduler"])
    prefix = f"rank{runtime.rank}."
    restore_rng({name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)},
                payload["rng"][runtime.rank])
    return TrainingState(payload["step"], payload["epoch"], payload["position"], payload["history"])


# --- logs -----------------------------------------------------------------------------------

def write_history(output_dir: Path, history: list[dict[str, float]]) -> None:
    """The loss history as JSON and as a PNG plot (both replaced atomically)."""
    atomic_write_text(output_dir / HISTORY_NAME, json.dumps(history, indent=1))
    if history:
        atomic_write(output_dir / PLOT_NAME, lambda tmp: plot_history(history, tmp))


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = [entry["step"] for entry in history]
    figure, axes = plt.subplots(figsize=(7, 4))
    for name in (*OBJECTIVES, "total"):
        axes.plot(steps, [entry[name] for entry in history], label=name, linewidth=2 if name == "total" else 1)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


# --- set-up steps ------------------------------------------------------------------------------

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


def build_dataset(train_config: TrainConfig, tokenizer, config: QaracConfig) -> QaracDataset | CorpusBatches:
    from qarac.tokenizer import check_tokenizer_fits

    check_tokenizer_fits(tokenizer, config.vocab_size)
    if train_config.max_length > config.max_tokens:
        raise ValueError(f"max_length {train_config.max_length} exceeds the model's {config.max_tokens} positions")
    data_config = train_config.data_config()
    if data_config.is_default:
        return QaracDataset.from_directory(train_config.data_dir, tokenizer, train_config.max_length)
    return build_corpus_batches(train_config, data_config, tokenizer)


def build_corpus_batches(train_config: TrainConfig, data_config: DataConfig, tokenizer) -> CorpusBatches:
    """The batches of non-default data options, every epoch to be run checked for ragged batches up front.

    Raises:
        ValueError: a ragged batch (legacy padding), where the original's fit stopped.
    """
    dataset = CorpusBatches.from_directory(train_config.data_dir, tokenizer, data_config,
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


def reduce_losses(losses: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """The losses averaged over ranks (what the global batch scored)."""
    if not runtime.distributed:
        return losses
    values = torch.tensor([losses[name] for name in losses], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(values)
    return {name: float(value) / runtime.world_size for name, value in zip(losses, values)}


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


# --- the loop ---------------------------------------------------------------------------------------

# --- stopping on a signal ----------------------------------------------------------------------

class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training at a step boundary, after a checkpoint was saved."""

    def __init__(self, signal_name: str, step: int, output_dir: Path):
        super().__init__(f"stopped by {signal_name} after step {step}; checkpoint saved in {output_dir}; "
                         "continue with --resume")
        self.signal_name, self.step, self.output_dir = signal_name, step, output_dir


class StopSignals:
    """Within this block SIGINT/SIGTERM only ask training to stop at the next step
    boundary (a step half done cannot be saved); a second signal acts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can be set there only
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def _handle(self, number: int, frame) -> None:
        self.received = signal.Signals(number).name
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def requested(self, runtime: Runtime) -> bool:
        """Whether to stop now; under DDP, whether any rank got a signal (all stop at one step)."""
        requested = self.received is not None
        if runtime.distributed:
            flag = torch.tensor([float(requested)], device=runtime.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested


# --- the loop ---------------------------------------------------------------------------------------

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
        qarac.data.DataError: unreadable corpus file.
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
    per_epoch = steps_per_epoch(dataset, train_config, runtime)
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
