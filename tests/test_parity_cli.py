"""`qarac-parity`'s flags, outputs and terminal lines (issue 13 item 7 and "output a person
reads"): every flag checked before any work, each report file written on its own, the
verdict line printed under --quiet, TensorFlow's start-up lines silenced."""

from __future__ import annotations

import json

import pytest

import parity.cli
import parity.harness
import parity.plot
import parity.report
from parity.cli import main
from parity.harness import ParityReport


def fake_report() -> ParityReport:
    return ParityReport(model="tiny", versions={"python": "3.11"}, checks={"forward": True, "weights": True},
                        passed=True, timings_s={"total": 1.5})


@pytest.fixture
def no_harness(monkeypatch):
    """Fails the test if the (minutes long) harness starts."""
    monkeypatch.setattr(parity.harness, "run_parity", lambda *a, **k: pytest.fail("the harness started"))


@pytest.fixture
def fake_harness(monkeypatch):
    monkeypatch.setattr(parity.harness, "run_parity", lambda *a, **k: fake_report())
    monkeypatch.setattr(parity.cli, "check_tensorflow", lambda: None)  # the faked harness needs none


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_bad_tolerance_fails_before_any_work(no_harness, capsys, value):
    assert main(["--tolerance", value, "--verbose"]) == 2
    assert "--tolerance must be a finite number > 0" in _error_line(capsys)


@pytest.mark.parametrize("flag", ["--json", "--markdown", "--plot"])
def test_unwritable_report_path_fails_before_any_work(no_harness, tmp_path, capsys, flag):
    assert main([flag, str(tmp_path / "missing" / "out"), "--verbose"]) == 2
    assert f"{flag} {tmp_path / 'missing' / 'out'}: directory" in _error_line(capsys)
    assert main([flag, str(tmp_path), "--verbose"]) == 2
    assert "is a directory" in _error_line(capsys)


def test_each_report_is_written_on_its_own(fake_harness, monkeypatch, tmp_path, capsys):
    def broken(report, path):
        raise OSError("disk full")

    def written(report, path):
        path.write_text(report.model)

    # The fake report is too thin for the real Markdown and plot; which writer fails is what counts.
    monkeypatch.setattr(parity.report, "write_markdown", written)
    monkeypatch.setattr(parity.plot, "plot_gradient_flow", written)
    for failing in ("json", "markdown"):
        monkeypatch.setattr(parity.report, "write_json", written)
        monkeypatch.setattr(parity.report, f"write_{failing}", broken)
        paths = {"json": tmp_path / f"{failing}.json", "markdown": tmp_path / f"{failing}.md",
                 "plot": tmp_path / f"{failing}.png"}
        status = main(["--quiet", "--verbose", *[arg for key, path in paths.items()
                                                 for arg in (f"--{key}", str(path))]])
        assert status == 2
        assert f"could not write --{failing}" in _error_line(capsys)
        assert [key for key, path in paths.items() if not path.exists()] == [failing]


def test_quiet_prints_the_verdict_line(fake_harness, capsys):
    assert main(["--quiet", "--verbose"]) == 0
    assert capsys.readouterr().out.splitlines() == ["qarac-parity: PASSED, 2 checks, 1.5 s"]


@pytest.mark.parametrize("command", [[], ["record", "--out", "bundle"]])
def test_live_run_and_record_without_tensorflow_fail_in_one_line(command, tmp_path, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "need TensorFlow" in error and "qarac-parity check" in error, error


def markdown_report() -> ParityReport:
    """A report with the fields the Markdown reads: seven parameters missing a gradient in tf/fit."""
    missing = [f"decoder.base.encoder.layer.{i}.output.dense.weight" for i in range(7)]
    weights = {"mapped": 119, "tf_only": [], "pt_only": [], "mismatched": [], "shared": [],
               "tied": {f"lm_head.{i}": "word_embeddings" for i in range(5)}, "round_trip_bit_exact": True}
    gradients = {"tf/fit": {"missing": missing, "zero": [], "nonfinite": [],
                            "causes": {name: "dead parameter: never used" for name in missing}}}
    return ParityReport(model="tiny", versions={"python": "3.11"}, weights=weights, gradients=gradients,
                        checks={"forward": True}, passed=True, timings_s={"total": 1.5})


def test_markdown_explains_its_terms_and_cuts_no_list():
    from parity.report import report_markdown

    text = report_markdown(markdown_report())
    terms = text.split("## Terms", 1)[1].split("\n## ", 1)[0]
    for term in ("legacy preset", "tf/eager", "tf/graph", "tf/fit", "pt/legacy", "pt/default", "six variables"):
        assert term in terms, term
    assert "(+" not in text
    assert all(f"layer.{i}.output" in text.split("## Gradient flow")[1] for i in range(7))
    summary = text.split("## Summary\n", 1)[1].strip().splitlines()
    assert summary[0] == "| quantity | value |" and summary[1] == "|---|---|"


def test_bin_only_directory_gets_the_conversion_hint(no_harness, tmp_path, tiny_model_dir, capsys):
    import shutil

    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(tiny_model_dir / "config.json", model / "config.json")
    (model / "pytorch_model.bin").write_bytes(b"pickled")
    assert main(["--model", str(model)]) == 2
    line = _error_line(capsys)
    assert "pytorch_model.bin" in line and "convert them to safetensors" in line
