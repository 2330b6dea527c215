"""The port stays free of TensorFlow; the embedded tiny RoBERTa is deterministic."""

import subprocess
import sys

import pytest

from qarac.presets import ROBERTA_BASE, build_base_checkpoint, roberta_config


def test_import_qarac_never_imports_tensorflow():
    code = (
        "import sys, qarac, qarac.presets, qarac.checkpoint\n"
        "from qarac import QaracTrainerModel\n"
        "bad = sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith(('tensorflow.', 'tf_keras', 'keras')))\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "clean" in result.stdout


def test_tiny_checkpoint_is_deterministic(tmp_path):
    first = build_base_checkpoint(tmp_path / "a", seed=5)
    second = build_base_checkpoint(tmp_path / "b", seed=5)
    other = build_base_checkpoint(tmp_path / "c", seed=6)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


def test_tiny_checkpoint_is_an_ordinary_hf_directory(tiny_model_dir):
    from transformers import RobertaModel

    model = RobertaModel.from_pretrained(tiny_model_dir, local_files_only=True)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (32, 2, 4, 37)


def test_roberta_base_preset_has_roberta_base_shapes():
    config = roberta_config("roberta-base")
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.intermediate_size,
            config.max_position_embeddings) == (50265, 768, 12, 3072, 514)
    assert ROBERTA_BASE["type_vocab_size"] == 1


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        roberta_config("huge")


def test_tiny_checkpoint_ships_the_embedded_tokenizer(tiny_model_dir):
    from qarac.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    assert len(tokenizer) == 512
    ids = tokenizer("The cat sat.")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2


# sha256 over (name, float32 bytes) of every tensor of the seed-0 tiny model, in name order.
# Produced by `build_base_checkpoint(dir)` on transformers 4.57.6 and 5.24.0 (identical files);
# `make test` and `make test-modern` both check it, so the two lines build one embedded model.
TINY_SEED0_DIGEST = "3eea76da0a877248aaf1355d178600ac9efb61b69e0445692f4d3cd2d07e3af0"


def test_tiny_checkpoint_is_the_same_on_every_transformers_line(tmp_path):
    import hashlib

    from safetensors.numpy import load_file

    tensors = load_file(build_base_checkpoint(tmp_path / "tiny", seed=0) / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].tobytes())
    assert digest.hexdigest() == TINY_SEED0_DIGEST


def test_tiny_checkpoint_follows_robertas_init_rule(tmp_path):
    from safetensors.numpy import load_file

    tensors = load_file(build_base_checkpoint(tmp_path / "tiny", seed=3) / "model.safetensors")
    for name, tensor in tensors.items():
        if name.endswith("LayerNorm.weight"):
            assert (tensor == 1).all(), name
        elif name.endswith("bias"):
            assert (tensor == 0).all(), name
        else:
            assert abs(float(tensor.std()) - 0.02) < 0.003 and abs(float(tensor.mean())) < 0.003, name
    for table in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"):
        assert (tensors[table][1] == 0).all()  # the <pad> row, as RoBERTa's padding_idx init leaves it


def test_the_bootstrap_installs_every_requirement_of_the_extras():
    """scripts/requirements.py (the Makefile installs its list before the project): the base
    dependencies and each named extra's, as pyproject.toml lists them; an unknown extra is named."""
    import importlib.util
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("requirements_script", root / "scripts" / "requirements.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    listed = script.requirements(["legacy", "test"])
    expected = [*project["dependencies"], *project["optional-dependencies"]["legacy"],
                *project["optional-dependencies"]["test"]]
    assert listed == expected and "tensorflow-cpu>=2.21,<2.22" in listed
    with pytest.raises(SystemExit, match="unknown extra.*legasy"):
        script.requirements(["legasy"])
