"""`qarac train` on either data preset (`--data-preset`, `--data-option`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qarac.cli import main
from qarac.data.batches import CorpusBatches
from qarac.data.options import data_config_for
from qarac.losses import QaracLoss
from qarac.tokenizer import load_default_tokenizer
from qarac.training.build import build_model
from qarac.training.checkpoints import STATE_JSON, latest_checkpoint
from qarac.training.loop import train
from training_helpers import small_corpus, tiny_train_config

LEGACY_TRAINABLE = ("padding=corpus_fit", "batch_size=4")


def test_legacy_preset_refuses_ragged_batches_up_front(tmp_path, capsys):
    """The sample corpora's legacy batches are ragged from batch 0 (seed 0): a one-line error, no training."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--output", str(tmp_path / "out"), "--data-preset", "legacy", "--max-steps", "1",
              "--no-progress"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "are ragged" in error and "batch 0, field" in error and "padding=corpus_fit" in error
    assert not (tmp_path / "out" / "latest").exists()


def test_bad_data_option_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--output", str(tmp_path), "--data-option", "colour=red", "--max-steps", "1"])
    assert exit_info.value.code == 2
    assert "NAME=VALUE with NAME one of" in capsys.readouterr().err


def test_trains_on_the_legacy_batches(tmp_path):
    """The first step's losses are those of the legacy preset's first batch, computed here by hand."""
    data = small_corpus(tmp_path / "data", rows=6)  # all_text composed: 36 rows, 9 batches of 4
    config = tiny_train_config(tmp_path / "run", data_dir=str(data), max_steps=3, legacy=True,
                               data_preset="legacy", data_options=LEGACY_TRAINABLE, learning_rate=1e-5)
    model = build_model(config, _tiny_dir())
    model.eval()
    batches = CorpusBatches.from_directory(data, load_default_tokenizer(), data_config_for("legacy",
                                           LEGACY_TRAINABLE), max_length=24, seed=0)
    first = next(batches.batches(0))
    assert first.inputs["offset_text"].input_ids[0, :3].tolist() == [0, 0, 2]
    with torch.no_grad():
        expected = QaracLoss(model.config)(model(first.inputs), first.targets).item()
    state = train(config).state
    assert len(state.history) == 3
    history = json.loads((tmp_path / "run" / "loss_history.json").read_text())
    # Dropout is on while training, so the first step's loss only lies near the eval one.
    assert history[0]["total"] == pytest.approx(expected["total"], rel=0.2)
    assert all(np.isfinite(h["total"]) for h in history)
    state_file = latest_checkpoint(tmp_path / "run") / STATE_JSON
    saved = json.loads(state_file.read_text())["train_config"]
    assert saved["data_preset"] == "legacy" and list(saved["data_options"]) == list(LEGACY_TRAINABLE)


def _tiny_dir():
    from qarac.presets import tiny_model_dir

    return tiny_model_dir()
