"""Shared builders for the training, CLI and distributed tests: tiny runs on the sample corpus."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from qarac.data.corpora import DEFAULT_DATA_DIR
from qarac.training.checkpoints import latest_checkpoint
from qarac.training.config import TrainConfig
from qarac.trainer import QaracTrainerModel

REPO = Path(__file__).resolve().parent.parent
# The tiny model's ops are too small to gain from threads, and on a shared 2-core machine
# intra-op threads spin against each other (a step took 4x longer with 2 threads).
# One thread in-process and in subprocesses also keeps their float results identical.
torch.set_num_threads(1)
# Tiny runs: short sequences, small batches, a learning rate high enough to move in a few steps.
TINY_RUN = dict(max_length=24, batch_size=2, learning_rate=1e-3, checkpoint_every=0, progress=False)


def tiny_train_config(output_dir: Path, **changes) -> TrainConfig:
    return TrainConfig(output_dir=str(output_dir), **{**TINY_RUN, **changes})


def small_corpus(directory: Path, rows: int = 5) -> Path:
    """The first `rows` rows of each sample corpus: a few steps cross an epoch boundary."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in DEFAULT_DATA_DIR.glob("*.csv"):
        with source.open(encoding="utf-8", newline="") as handle:
            lines = list(csv.reader(handle))[:rows + 1]
        with (directory / source.name).open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows(lines)
    return directory


def saved_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return QaracTrainerModel.from_pretrained(latest_checkpoint(output_dir)).state_dict()


def assert_bit_equal(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    differing = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not differing, f"{len(differing)} tensors differ, first {differing[:3]}"


def run_qarac(*args: str, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """`python -m qarac ARGS` in a subprocess, with this test session's QARAC_HOME."""
    return subprocess.run([sys.executable, "-m", "qarac", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=subprocess_env(), **popen)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env
