"""Training checkpoints: written atomically, found again, and read back to resume.

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
interrupted saves leave is removed at the next start (`run_dir.remove_stale`). A
directory holding a run is continued only with `resume` (same settings,
`resume.changed_settings`) and replaced only with `overwrite`. Nothing is pickled;
resuming reads safetensors and JSON only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from qarac.checkpoint import CheckpointError, atomic_write, atomic_write_text, load_safetensors, sha256_of
from qarac.data.corpora import CORPUS_COLUMNS
from qarac.trainer import QaracTrainerModel
from qarac.training.config import TrainConfig
from qarac.training.rng import restore_rng
from qarac.training.runtime import Runtime

LATEST_NAME = "latest"
CHECKPOINT_PREFIX = "checkpoint-"
# checkpoint-STEP, or checkpoint-STEP-K for the K-th re-save of one step.
CHECKPOINT_PATTERN = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)(?:-(\d+))?")
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
STATE_FORMAT_VERSION = 1


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


def remove_directory(directory: Path) -> None:
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
        remove_directory(path)


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
    saved = read_state_json(latest_checkpoint(output_dir)).get("train_config", {})
    return saved if isinstance(saved, dict) else {}


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a training output directory (its `latest`)."""
    path = Path(path)
    if (path / LATEST_NAME).is_file():
        return latest_checkpoint(path)
    return path


def read_state_json(directory: Path) -> dict[str, Any]:
    path = directory / STATE_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is missing or corrupt: {error}") from error


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
    digests = {}
    for name in CORPUS_COLUMNS:
        path = Path(data_dir) / f"{name}.csv"
        digests[path.name] = sha256_of(path) if path.is_file() else "missing"
    return digests


def load_training_state(directory: Path, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, runtime: Runtime) -> TrainingState:
    """Restore optimizer, scheduler and this rank's RNG from a checkpoint.

    Raises:
        CheckpointError: missing or corrupt state files, or another world size.
    """
    payload = read_state_json(directory)
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
