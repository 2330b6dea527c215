"""`qarac-parity --keras3`: refused in one line, before any work, where the `keras3` extra is missing;
passed on to the harness otherwise."""

import importlib.util

import pytest

import parity.cli
import parity.harness
from parity.cli import main
from parity.harness import ParityReport


@pytest.fixture
def no_tensorflow_check(monkeypatch):
    monkeypatch.setattr(parity.cli, "check_tensorflow", lambda: None)


@pytest.mark.parametrize("module", ["keras_hub", "jax"])
def test_missing_extra_fails_in_one_line_before_any_work(module, monkeypatch, capsys, no_tensorflow_check):
    monkeypatch.setattr(parity.harness, "run_parity", lambda *a, **k: pytest.fail("the harness started"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a))
    assert main(["--keras3", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and module in error and "keras3" in error, error


def test_flag_reaches_the_harness(monkeypatch, capsys, no_tensorflow_check):
    pytest.importorskip("keras_hub", reason="needs the `keras3` extra")
    pytest.importorskip("jax", reason="needs the `keras3` extra")
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        return ParityReport(model="tiny", versions={}, checks={"keras3_forward": True}, passed=True,
                            timings_s={"total": 1.0})

    monkeypatch.setattr(parity.harness, "run_parity", fake)
    from parity import fit_probe

    monkeypatch.setattr(fit_probe, "start_fit_probe", lambda *a: None)
    monkeypatch.setattr(fit_probe, "stop_fit_probe", lambda probe: None)
    monkeypatch.setattr(parity.cli, "start_tensorflow_quietly", lambda: None)
    assert main(["--keras3", "--quiet"]) == 0
    assert seen["keras3"] is True
