"""`python -m legacy_keras.reproduce`: one fit step prints the seed's six variables."""

import json
from types import SimpleNamespace

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
    # Beside them, what fit did over an epoch of the original's pipeline (docs/legacy.md §1.5):
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


@pytest.mark.slow
def test_trace_once_traces_fit_once_and_names_the_same_variables():
    from legacy_keras.build import build_trainer, synthetic_batch
    from legacy_keras.gradients import gradient_report

    trainer = build_trainer(None, seed=0)
    batch, targets = synthetic_batch(trainer.decoder.config, batch_size=2, seq_len=7, seed=0)
    traces = []
    step = trainer.train_step
    trainer.train_step = lambda data: traces.append(1) or step(data)
    report = gradient_report(trainer, batch, targets, mode="fit", trace_once=True)
    assert len(traces) == 1
    assert list(report.missing) == SEED_MISSING


@pytest.mark.slow
def test_the_harness_probe_names_the_same_variables(fresh_recording, monkeypatch):
    """The harness runs the probe with Grappler off and fit's variables created before its step
    (traced once, not twice): the warning is raised while tracing, before any graph optimisation,
    so the names must be the seed's six, in the seed's order."""
    import subprocess

    from parity import fit_probe
    from qarac.presets import tiny_model_dir

    # The names: what the probe of the suite's one fresh recording (`record_legacy`, which starts and
    # reads it through `start_fit_probe`/`finish_fit_probe`) returned.
    assert fresh_recording.fit_warning == SEED_MISSING
    # The flags it ran with, read from the command the probe would start (not run a second time).
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda command, **kwargs: started.append(command) or SimpleNamespace())
    fit_probe.start_fit_probe(tiny_model_dir(), 0).log.close()
    assert {"--no-graph-optimizer", "--no-epoch", "--trace-once"} <= set(started[0])


@pytest.mark.slow
def test_a_failing_probe_is_one_error(tmp_path):
    from parity.fit_probe import finish_fit_probe, start_fit_probe

    with pytest.raises(RuntimeError, match="the legacy fit probe failed"):
        finish_fit_probe(start_fit_probe(tmp_path / "no-such-model", 0))
