"""The training output directory: what a run wrote there, what interrupted saves left, and
whether a run may write there at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from qarac.training.checkpoints import CHECKPOINT_PREFIX, LATEST_NAME, list_checkpoints, remove_directory
from qarac.training.history import HISTORY_NAME, PLOT_NAME


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
            remove_directory(path)
        else:
            path.unlink()
    remove_stale(output_dir)


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
