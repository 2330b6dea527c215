"""Issue 13 item 6: a base weights file with a missing, extra or wrong-shaped tensor, or
without `format` metadata, is a one-line error naming each tensor, before any work."""

from __future__ import annotations

import pytest

from qarac.checkpoint import CheckpointError, load_base_model, read_roberta_config
from qarac.config import QaracConfig
from qarac.trainer import QaracTrainerModel
from weights_helpers import DROPPED, EXTRA, RESHAPED, faulty_model_dir

FAULTS = {"missing": DROPPED, "unexpected": EXTRA, "shape": RESHAPED, "no_format": "'format' metadata"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faulty_base_is_refused(tmp_path, tiny_model_dir, fault):
    model_dir = faulty_model_dir(tiny_model_dir, tmp_path / "model", fault)
    with pytest.raises(CheckpointError) as error:
        QaracTrainerModel.from_base_model(model_dir, QaracConfig.from_roberta_config(read_roberta_config(model_dir)))
    message = str(error.value)
    assert FAULTS[fault] in message and "\n" not in message


def test_missing_pooler_is_refused_only_when_the_pooler_is_built(tmp_path, tiny_model_dir):
    import safetensors.torch

    model_dir = faulty_model_dir(tiny_model_dir, tmp_path / "model", "unexpected")
    tensors = safetensors.torch.load_file(model_dir / "model.safetensors")
    tensors = {name: value for name, value in tensors.items() if not name.startswith(("pooler.", "encoder.layer.7"))}
    safetensors.torch.save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    fixed = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    assert load_base_model(model_dir, fixed) is not None  # the default config builds no pooler
    with pytest.raises(CheckpointError, match="missing: pooler.dense.bias, pooler.dense.weight"):
        load_base_model(model_dir, fixed.legacy())


def test_task_model_layout_loads(tmp_path, tiny_model_dir):
    """roberta-base's own file holds `roberta.`-prefixed base tensors and an `lm_head`: accepted."""
    import shutil

    import safetensors.torch
    import torch

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    tensors = safetensors.torch.load_file(model_dir / "model.safetensors")
    tensors = {f"roberta.{name}": value for name, value in tensors.items()}
    tensors["lm_head.bias"] = torch.zeros(3)
    safetensors.torch.save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    loaded = load_base_model(model_dir).state_dict()
    original = load_base_model(tiny_model_dir).state_dict()
    assert all(torch.equal(loaded[name], original[name]) for name in original)


@pytest.mark.parametrize("fault", ["missing", "shape"])
def test_qarac_train_refuses_faulty_base(tmp_path, tiny_model_dir, capsys, fault):
    from qarac.cli import main

    model_dir = faulty_model_dir(tiny_model_dir, tmp_path / "model", fault)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--output", str(tmp_path / "out"), "--model", str(model_dir), "--max-steps", "1",
              "--no-progress"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and FAULTS[fault] in error[0]
    assert not (tmp_path / "out" / "latest").exists()


@pytest.mark.parametrize("fault", ["missing", "no_format"])
def test_qarac_parity_refuses_faulty_base(tmp_path, tiny_model_dir, capsys, fault):
    from parity.cli import main

    model_dir = faulty_model_dir(tiny_model_dir, tmp_path / "model", fault)
    assert main(["--model", str(model_dir), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and FAULTS[fault] in error[0]
