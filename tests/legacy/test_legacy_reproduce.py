"""`python -m legacy_keras.reproduce`: one fit step prints the seed's six variables."""

import json

import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")
pytestmark = pytest.mark.legacy

from legacy_helpers import POOLERS, SEED_MISSING  # noqa: E402


@pytest.mark.slow
def test_reproduce_prints_the_seeds_six_variables(capsys):
    from legacy_keras.reproduce import main

    assert main([]) == 0
    result = json.loads(capsys.readouterr().out)
    # Exactly the seed's list, names and order. With tensorflow 2.21 / tf-keras
    # 2.21 / transformers 4.57 no name differs from the seed's (older TF/Keras 2).
    assert result["missing_gradients"] == SEED_MISSING
    assert result["tensorflow"] == tf.__version__
    assert set(result) == {"missing_gradients", "tensorflow", "keras", "transformers", "epoch"}
    # Beside them, what fit did over an epoch of the original's pipeline (SPEC 1.5):
    # on the sample corpora, seed 0, the very first batch is already ragged.
    epoch = result["epoch"]
    assert epoch["stopped"] and epoch["batches_completed"] == epoch["first_ragged"]["batch"] == 0
    assert epoch["first_ragged"]["padded_length"] == epoch["first_ragged"]["longest_text"] + 1
    assert "ragged" in epoch["why"]


@pytest.mark.slow
def test_reproduce_with_the_fix_leaves_only_the_poolers(tmp_path):
    from legacy_keras.reproduce import reproduce
    from qarac.presets import tiny_model_dir

    assert reproduce(tiny_model_dir(), fixed=True, epoch=False)["missing_gradients"] == POOLERS


def test_reproduce_reports_a_bad_model_directory(tmp_path, capsys):
    from legacy_keras.reproduce import main

    assert main(["--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
