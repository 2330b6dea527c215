"""Issue 13: nothing lost, nothing silently wrong in a training output directory.

A new run never replaces an old one unasked (item 1); `latest` names a complete
checkpoint at every instant of a save, also when the same step is saved again
(item 2); stale staging files go, the last checkpoints stay (item 4); a resumed
run refuses changed settings (item 8); bad settings fail before any work (item 7).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch

import qarac.training.loop as loop_module
from qarac.checkpoint import CheckpointError
from qarac.training.checkpoints import LATEST_NAME, latest_checkpoint
from qarac.training.config import TrainConfig
from qarac.training.loop import train
from qarac.training.run_lock import LOCK_NAME, RunLock
from training_helpers import assert_bit_equal, saved_weights, small_corpus, tiny_train_config


def run_files(output: Path) -> dict[str, bytes]:
    """Every file under `output`, by relative path, with its bytes."""
    return {str(path.relative_to(output)): path.read_bytes() for path in sorted(output.rglob("*")) if path.is_file()}


# --- item 1: a new run over an old one -----------------------------------------------------------

def test_new_run_over_a_finished_run_is_refused(tmp_path):
    train(tiny_train_config(tmp_path, max_steps=2))
    before = run_files(tmp_path)
    with pytest.raises(ValueError, match="--resume.*--overwrite") as error:
        train(tiny_train_config(tmp_path, max_steps=3))
    assert "\n" not in str(error.value)
    assert run_files(tmp_path) == before  # nothing replaced, nothing removed


def test_overwrite_replaces_the_old_run(tmp_path):
    train(tiny_train_config(tmp_path, max_steps=3))
    train(tiny_train_config(tmp_path, max_steps=2, overwrite=True, seed=1))
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000002"
    assert len(json.loads((tmp_path / "loss_history.json").read_text())) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-")] == ["checkpoint-00000002"]


def test_resume_and_overwrite_together_are_refused():
    with pytest.raises(ValueError, match="--resume and --overwrite"):
        TrainConfig(output_dir="x", resume=True, overwrite=True)


def test_missing_latest_error_advises_nothing_destructive(tmp_path):
    train(tiny_train_config(tmp_path, max_steps=2))
    (tmp_path / LATEST_NAME).unlink()
    with pytest.raises(CheckpointError) as error:
        train(tiny_train_config(tmp_path, max_steps=3, resume=True))
    message = str(error.value)
    assert "without --resume" not in message and "checkpoint-00000002" in message


def test_output_naming_a_file_fails_before_training(tmp_path, monkeypatch):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    monkeypatch.setattr(loop_module, "build_model", lambda *a: pytest.fail("training started"))
    with pytest.raises(ValueError, match="is a file"):
        train(tiny_train_config(target, max_steps=1))
    assert target.read_text() == "keep me"


# --- item 2 and 4: a kill at every step of the save sequence ------------------------------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it."""


FILESYSTEM_OPERATIONS = [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree")]


def kill_at(monkeypatch, index: int, output: Path, snapshot: Path) -> list[str]:
    """Before filesystem operation number `index` (0-based) copy `output` to `snapshot` (what a
    kill at that instant leaves) and raise Killed. Returns the operations seen, as they happen."""
    seen: list[str] = []
    originals = {(module, name): getattr(module, name) for module, name in FILESYSTEM_OPERATIONS}

    def wrap(module, name):
        original = originals[(module, name)]

        def operation(*args, **kwargs):
            if len(seen) == index:
                seen.append(f"{name} (killed)")
                for patched_module, patched_name in FILESYSTEM_OPERATIONS:  # copytree must run unpatched
                    setattr(patched_module, patched_name, originals[(patched_module, patched_name)])
                shutil.copytree(output, snapshot, symlinks=True)
                raise Killed()
            seen.append(name)
            return original(*args, **kwargs)
        return operation

    for module, name in FILESYSTEM_OPERATIONS:
        monkeypatch.setattr(module, name, wrap(module, name))
    return seen


@pytest.mark.line_independent
@pytest.mark.parametrize("scenario", ["same_step", "next_step"])
def test_kill_at_every_step_of_a_save_leaves_a_checkpoint_latest_names(tmp_path, monkeypatch, scenario):
    """`same_step`: resuming a finished run saves its step again (the old code removed the
    checkpoint `latest` named before renaming the new one in). `next_step`: one step more."""
    data = small_corpus(tmp_path / "data", rows=5)
    finished = tmp_path / "finished"
    train(tiny_train_config(finished, data_dir=str(data), max_steps=2))
    steps = 2 if scenario == "same_step" else 3
    expected_dir = tmp_path / "expected"
    shutil.copytree(finished, expected_dir)
    train(tiny_train_config(expected_dir, data_dir=str(data), max_steps=steps, resume=True))
    original = saved_weights(finished)
    index, leftovers = 0, {}
    while True:
        output, snapshot = tmp_path / f"run{index}", tmp_path / f"killed{index}"
        shutil.copytree(finished, output)
        with monkeypatch.context() as patch:
            seen = kill_at(patch, index, output, snapshot)
            try:
                train(tiny_train_config(output, data_dir=str(data), max_steps=steps, resume=True))
            except Killed:
                pass
        if not snapshot.exists():  # the save sequence has fewer operations: every instant was tried
            break
        # At this instant `latest` names a complete checkpoint: the old one or the new one.
        checkpoint = latest_checkpoint(snapshot)
        weights = saved_weights(snapshot)
        json.loads((checkpoint / "training_state.json").read_text())
        if not all(torch.equal(weights[name], original[name]) for name in weights):
            assert_bit_equal(saved_weights(expected_dir), weights)
        # Resuming from what the kill left finishes the run and clears the leftovers (item 4).
        train(tiny_train_config(snapshot, data_dir=str(data), max_steps=steps, resume=True))
        assert_bit_equal(saved_weights(expected_dir), saved_weights(snapshot))
        leftovers[index] = [p.name for p in snapshot.iterdir() if p.name.startswith(".")]
        index += 1
    assert index >= 4, seen  # staging rename, latest switch, history and plot at least
    assert not any(leftovers.values()), leftovers


# --- item 4: retention ---------------------------------------------------------------------------

def test_last_two_checkpoints_are_kept(tmp_path):
    train(tiny_train_config(tmp_path, max_steps=5, checkpoint_every=1))
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-"))
    assert kept == ["checkpoint-00000004", "checkpoint-00000005"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000005"


def test_keep_checkpoints_is_configurable(tmp_path):
    train(tiny_train_config(tmp_path, max_steps=4, checkpoint_every=1, keep_checkpoints=3))
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-"))
    assert kept == ["checkpoint-00000002", "checkpoint-00000003", "checkpoint-00000004"]


def test_resume_says_which_checkpoint_and_names_the_fallback(tmp_path, caplog):
    import logging

    train(tiny_train_config(tmp_path, max_steps=2, checkpoint_every=1))
    with caplog.at_level(logging.INFO, logger="qarac.training"):
        train(tiny_train_config(tmp_path, max_steps=3, resume=True))
    assert "resuming from checkpoint-00000002 (step 2)" in caplog.text
    (latest_checkpoint(tmp_path) / "model.safetensors").write_bytes(b"\0" * 64)  # the newest is corrupt
    with pytest.raises(CheckpointError, match="checkpoint-00000002 is kept"):
        train(tiny_train_config(tmp_path, max_steps=4, resume=True))


# --- item 8: resume with changed settings --------------------------------------------------------

def test_resume_with_changed_settings_is_refused(tmp_path):
    data = small_corpus(tmp_path / "data", rows=5)
    train(tiny_train_config(tmp_path / "run", max_steps=2))
    changed = dict(learning_rate=2e-3, batch_size=3, seed=4, data_dir=str(data), max_length=20,
                   decay_steps=7, decay_rate=0.5)
    with pytest.raises(CheckpointError) as error:
        train(tiny_train_config(tmp_path / "run", max_steps=3, resume=True, **changed))
    message = str(error.value)
    assert "\n" not in message
    for name in changed:
        assert name in message, (name, message)
    assert "batch_size 2 → 3" in message and "learning_rate 0.001 → 0.002" in message


def test_resume_may_change_the_safe_settings(tmp_path):
    train(tiny_train_config(tmp_path, max_steps=2))
    state = train(tiny_train_config(tmp_path, max_steps=3, resume=True, checkpoint_every=1,
                                    num_workers=0, epochs=5)).state
    assert state.step == 3


# --- item 7: settings checked before any work ----------------------------------------------------

@pytest.mark.parametrize("setting", [dict(learning_rate=float("nan")), dict(learning_rate=float("inf")),
                                     dict(decay_rate=float("nan")), dict(beta1=1.0), dict(beta2=-0.1),
                                     dict(epsilon=0.0), dict(epsilon=float("nan")), dict(keep_checkpoints=0)])
def test_bad_training_settings_are_refused(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        TrainConfig(output_dir="x", **setting)


# --- permissions --------------------------------------------------------------------------------

def test_run_files_get_the_users_normal_permissions(tmp_path):
    """mkstemp/mkdtemp made them 0600 files and 0700 directories, unlike the tokenizer files."""
    umask = os.umask(0o022)
    try:
        train(tiny_train_config(tmp_path, max_steps=1))
    finally:
        os.umask(umask)
    modes = {str(path.relative_to(tmp_path)): path.stat().st_mode & 0o777 for path in tmp_path.rglob("*")}
    assert {name: mode for name, mode in modes.items() if mode != (0o755 if (tmp_path / name).is_dir() else 0o644)} == {}


def test_settings_read_back_from_json_compare_equal_and_a_changed_data_option_is_listed(tmp_path):
    """The saved settings are JSON: a tuple (data_options) comes back as a list and must still compare equal."""
    import dataclasses
    import json

    from qarac.training.config import TrainConfig
    from qarac.training.resume import changed_settings

    config = TrainConfig(output_dir=str(tmp_path), data_options=("padding=corpus_fit",))
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    assert changed_settings(saved, config) == []
    changed = dataclasses.replace(config, data_options=("padding=corpus",))
    assert changed_settings(saved, changed) == ["data_options ['padding=corpus_fit'] → ['padding=corpus']"]


# --- issue 23 item 7: corpora edited in place ------------------------------------------------------

def test_resume_on_corpora_edited_in_place_is_refused(tmp_path):
    """The same data at another path was refused, but all_text cut from 1406 rows to 29 in place was not."""
    data = small_corpus(tmp_path / "data", rows=6)
    train(tiny_train_config(tmp_path / "run", max_steps=2, data_dir=str(data)))
    lines = (data / "all_text.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "all_text.csv").write_text("".join(lines[:3]), encoding="utf-8")
    with pytest.raises(CheckpointError) as error:
        train(tiny_train_config(tmp_path / "run", max_steps=3, resume=True, data_dir=str(data)))
    message = str(error.value)
    assert "all_text.csv" in message and "changed" in message and "\n" not in message, message
    assert not any((tmp_path / "run").glob("checkpoint-00000003*"))


# --- issue 23 item 6: the run's tokenizer, by content ---------------------------------------------

def test_resume_with_the_tokenizer_replaced_in_place_is_refused(tmp_path):
    """The path is the run's, the tokenizer is not: only its digest tells."""
    from qarac.data.corpora import DEFAULT_DATA_DIR, load_all_text
    from qarac.tokenizer import load_default_tokenizer, train_tokenizer

    data = small_corpus(tmp_path / "data", rows=6)
    tokenizer_dir = tmp_path / "tok"
    train_tokenizer(load_all_text(DEFAULT_DATA_DIR / "all_text.csv"), vocab_size=400).save_pretrained(tokenizer_dir)
    train(tiny_train_config(tmp_path / "run", max_steps=1, data_dir=str(data), tokenizer_dir=str(tokenizer_dir)))
    shutil.rmtree(tokenizer_dir)
    load_default_tokenizer().save_pretrained(tokenizer_dir)
    with pytest.raises(CheckpointError, match="trained with another tokenizer") as error:
        train(tiny_train_config(tmp_path / "run", max_steps=2, resume=True, data_dir=str(data),
                                tokenizer_dir=str(tokenizer_dir)))
    assert "\n" not in str(error.value)
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-00000001"


# --- issue 23 item 3: one writer per output directory -----------------------------------------------

def _start_training(output: Path, *extra: str):
    import subprocess
    import sys

    from training_helpers import REPO, subprocess_env

    args = [sys.executable, "-m", "qarac", "train", "--output", str(output), "--max-steps", "100000",
            "--checkpoint-every", "1", "--batch-size", "4", "--max-length", "32", "--no-progress", *extra]
    return subprocess.Popen(args, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_until_training(output: Path, process) -> None:
    """Until the first run has saved a checkpoint: it is training, its settings are on disk."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (output / LATEST_NAME).is_file():
            return
        time.sleep(0.05)
    pytest.fail(f"the first run never saved a checkpoint (status {process.poll()})")


@pytest.mark.slow
@pytest.mark.line_independent
def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_recovered(tmp_path):
    """Two `qarac train` into one --output: runs vanished or died mid-save; a --resume
    started while the first trained was accepted and killed the first."""
    import signal

    from training_helpers import run_qarac

    output = tmp_path / "run"
    first = _start_training(output, "--lr", "1e-3")
    try:
        _wait_until_training(output, first)
        for extra in (["--lr", "2e-3"], ["--overwrite"], ["--resume"]):
            second = run_qarac("train", "--output", str(output), "--max-steps", "2", "--batch-size", "4",
                               "--max-length", "32", "--no-progress", *extra)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
            assert "in use by another training run" in lines[0] and f"pid {first.pid}" in lines[0], lines[0]
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The holder died without releasing anything by hand: its lock is stale and recovered.
    assert f"pid {first.pid}" in (output / LOCK_NAME).read_text()
    state = train(tiny_train_config(output, max_steps=1, overwrite=True)).state
    assert state.step == 1 and latest_checkpoint(output).name == "checkpoint-00000001"
    assert not (output / LOCK_NAME).exists()  # removed by the run that took it over


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path, monkeypatch):
    """In one process: while `train` runs, another taker is refused naming this process."""
    seen = []
    real_save = loop_module.save_checkpoint

    def save_and_try_the_lock(output_dir, *args, **kwargs):
        with pytest.raises(ValueError, match=f"in use by another training run \\(pid {os.getpid()} "):
            with RunLock(output_dir):
                pass
        seen.append(True)
        return real_save(output_dir, *args, **kwargs)

    monkeypatch.setattr(loop_module, "save_checkpoint", save_and_try_the_lock)
    train(tiny_train_config(tmp_path, max_steps=1))
    assert seen == [True]
    assert not (tmp_path / LOCK_NAME).exists()  # released and removed when the run ended
    with RunLock(tmp_path):
        pass


def test_a_failed_run_into_a_new_directory_leaves_nothing(tmp_path):
    """The lock creates the output directory before the checks; a run refused there must not
    leave it behind, nor a lock file in it."""
    output = tmp_path / "new" / "run"
    with pytest.raises(CheckpointError):
        train(tiny_train_config(output, max_steps=1, model_dir=str(tmp_path / "no-such-model")))
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(CheckpointError):
        train(tiny_train_config(existing, max_steps=1, model_dir=str(tmp_path / "no-such-model")))
    assert existing.is_dir() and not any(existing.iterdir())


def test_a_lock_file_removed_by_its_holder_is_not_locked_by_a_late_taker(tmp_path):
    """A taker that opened the lock file just before its holder removed it locks a file no
    one else will ever open: it must see that and take the file now at the path."""
    first = RunLock(tmp_path).__enter__()
    late = open(tmp_path / LOCK_NAME, "a+", encoding="utf-8")  # opened, not yet locked
    first.__exit__(None, None, None)
    real_open = open

    def open_the_old_file_first(path, *args, **kwargs):
        nonlocal late
        if late is not None and str(path) == str(tmp_path / LOCK_NAME):
            handle, late = late, None
            return handle
        return real_open(path, *args, **kwargs)

    lock = RunLock(tmp_path)
    with mock.patch("builtins.open", open_the_old_file_first):
        lock.__enter__()
    try:
        with pytest.raises(ValueError, match="in use by another training run"):
            with RunLock(tmp_path):
                pass
    finally:
        lock.__exit__(None, None, None)
