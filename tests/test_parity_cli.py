"""`qarac-parity`'s flags, outputs and terminal lines (issue 13 item 7 and "output a person
reads"): every flag checked before any work, each report file written on its own, the
verdict line printed under --quiet, TensorFlow's start-up lines silenced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import parity.cli
import parity.harness
import parity.plot
import parity.record
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


# --- issue 23: nothing lost, nothing misaligned ----------------------------------------------------

REFERENCE = Path(__file__).resolve().parent.parent / "reference" / "tiny"


@pytest.fixture
def bundle_copy(tmp_path):
    """The shipped reference bundle, copied: a check may not touch it."""
    import shutil

    return shutil.copytree(REFERENCE, tmp_path / "bundle")


@pytest.fixture
def fake_check(monkeypatch):
    """`check BUNDLE` with the (minutes long) comparison replaced by a passing report."""
    monkeypatch.setattr(parity.harness, "check", lambda *a, **k: fake_report())
    monkeypatch.setattr(parity.report, "write_markdown", lambda report, path: path.write_text("markdown"))


def _bundle_bytes(bundle) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flag, target", [("--json", "manifest.json"), ("--markdown", "arrays.safetensors"),
                                          ("--json", "new-report.json"), ("--plot", "model/plot.png"),
                                          ("--json", "link-to-manifest")])
def test_a_report_path_inside_the_checked_bundle_is_refused(fake_check, bundle_copy, tmp_path, capsys, flag, target):
    """Item 1: `check B --json B/manifest.json` overwrote the bundle's own file and said PASSED."""
    (tmp_path / "link-to-manifest").symlink_to(bundle_copy / "manifest.json")
    path = tmp_path / target if target.startswith("link") else bundle_copy / target
    before = _bundle_bytes(bundle_copy)
    assert main(["check", str(bundle_copy), flag, str(path), "--quiet"]) == 2
    line = _error_line(capsys)
    assert f"{flag} {path}" in line and "inside the bundle" in line, line
    assert _bundle_bytes(bundle_copy) == before


def test_a_report_beside_the_bundle_is_written(fake_check, bundle_copy, tmp_path, capsys):
    assert main(["check", str(bundle_copy), "--json", str(tmp_path / "report.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is True


def test_record_overwrite_replaces_only_a_bundle(tmp_path, capsys, monkeypatch):
    """Item 2: `record --out U --overwrite` deleted U's user files."""
    monkeypatch.setattr(parity.cli, "check_tensorflow", lambda: None)
    user = tmp_path / "U"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    (user / "sub" / "data.csv").write_text("a,b\n")
    monkeypatch.setattr(parity.record, "record_legacy", lambda *a, **k: pytest.fail("recording started"))
    assert main(["record", "--out", str(user), "--overwrite"]) == 2
    line = _error_line(capsys)
    assert f"--out {user}" in line and "not a reference bundle" in line, line
    assert (user / "notes.txt").read_text() == "mine" and (user / "sub" / "data.csv").read_text() == "a,b\n"
    (tmp_path / "file").write_text("keep")
    assert main(["record", "--out", str(tmp_path / "file"), "--overwrite"]) == 2
    assert "not a reference bundle" in _error_line(capsys) and (tmp_path / "file").read_text() == "keep"


def test_write_bundle_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path):
    """Item 2, in the library: `write_bundle(..., overwrite=True)` is the deleting step."""
    from parity.bundle import Bundle, BundleError, write_bundle

    user = tmp_path / "U"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    bundle = Bundle()
    bundle.add("x", np.zeros(2), "an array")
    with pytest.raises(BundleError, match="not a reference bundle"):
        write_bundle(bundle, user, overwrite=True)
    assert (user / "notes.txt").read_text() == "mine"
    write_bundle(bundle, tmp_path / "B")
    write_bundle(bundle, tmp_path / "B", overwrite=True)  # a bundle is replaced


@pytest.mark.parametrize("where", ["proc", "parent_is_file", "missing_parent"])
def test_an_unwritable_report_path_names_the_real_cause_before_the_check(fake_check, monkeypatch, bundle_copy,
                                                                           tmp_path, capsys, where):
    """Item 11: `--json /proc/r.json` ran the whole check, then failed naming a temp file;
    a path under a regular file was reported as a missing directory."""
    monkeypatch.setattr(parity.record, "read_reference", lambda *a: pytest.fail("the bundle was read"))
    (tmp_path / "plain").write_text("x")
    path, cause = {"proc": ("/proc/r.json", "cannot create files in /proc"),
                   "parent_is_file": (str(tmp_path / "plain" / "r.json"), f"{tmp_path / 'plain'} is a file"),
                   "missing_parent": (str(tmp_path / "a" / "b" / "r.json"), f"directory {tmp_path / 'a'} does not exist")}[where]
    assert main(["check", str(bundle_copy), "--json", path]) == 2
    line = _error_line(capsys)
    assert cause in line, line


def test_two_reports_on_one_path_are_refused(no_harness, tmp_path, capsys):
    """Item 14: `--json X --markdown X` let the Markdown silently win."""
    path = tmp_path / "report"
    assert main(["--json", str(path), "--markdown", str(path), "--verbose"]) == 2
    line = _error_line(capsys)
    assert "--json" in line and "--markdown" in line and "same file" in line, line
    assert main(["--json", str(tmp_path / "r_stages.png"), "--plot", str(tmp_path / "r.png"), "--verbose"]) == 2
    assert "same file" in _error_line(capsys)
    assert not any(tmp_path.iterdir())


def test_a_plot_path_must_name_a_png(no_harness, tmp_path, capsys):
    """Item 14: `--plot p.txt` wrote PNG data into p.txt."""
    assert main(["--plot", str(tmp_path / "p.txt"), "--verbose"]) == 2
    line = _error_line(capsys)
    assert "--plot" in line and ".png" in line, line
    assert not (tmp_path / "p.txt").exists()


def _first_floor(manifest):
    stages = manifest["results"]["noise_floors"]["legacy"]["padded"]
    return stages[sorted(stages)[0]]


MANIFEST_EDITS = {
    "floor_is_a_string": lambda m: _first_floor(m).update(permuted_batch="tiny"),
    "capture_order_emptied": lambda m: m["results"]["capture_orders"].update(padded=[]),
    "parameters_emptied": lambda m: m["results"].update(parameters=[]),
    "backward_order_emptied": lambda m: m["results"].update(backward_order=[]),
    "training_steps_emptied": lambda m: m["results"]["training"].update(eager=[]),
    "shape_is_a_string": lambda m: m["arrays"][sorted(m["arrays"])[0]].update(shape="4x19"),
    "batch_size_is_a_string": lambda m: m.update(batch_size="4"),
    "float64_capture_order_emptied": lambda m: m["results"]["float64"]["capture_orders"].update(padded=[]),
    "float64_substitutes_a_list": lambda m: m["results"]["float64"].update(substitutes=["gelu"]),
}


@pytest.mark.parametrize("edit", sorted(MANIFEST_EDITS))
def test_a_malformed_manifest_is_one_line_before_the_check(monkeypatch, bundle_copy, capsys, edit):
    """Item 9: a string where a floor belongs, or emptied lists, gave a traceback and exit 1.

    The manifest's digest is made again after the edit, as a recorder with that bug would have
    made it: the shape check, not the digest, must catch it."""
    from parity.bundle import manifest_digest

    monkeypatch.setattr(parity.harness, "check", lambda *a, **k: pytest.fail("the check started"))
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    MANIFEST_EDITS[edit](manifest)
    manifest["digest"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))
    assert main(["check", str(bundle_copy)]) == 2
    line = _error_line(capsys)
    assert str(path) in line and "Traceback" not in line, line


@pytest.mark.parametrize("bundle", [REFERENCE, *sorted((REFERENCE.parent.parent / "tests" / "fixtures").glob("reference-*"))],
                         ids=lambda path: path.name)
def test_the_shipped_bundles_have_the_manifest_shape(bundle):
    """The shape check refuses none of the bundles this repository ships (schema 2, and schema 1 fixtures)."""
    from parity.bundle import OLDER_SCHEMAS, SCHEMA_VERSION, read_manifest

    manifest = read_manifest(bundle, schemas=(SCHEMA_VERSION, *OLDER_SCHEMAS))
    assert manifest["files"] and manifest["arrays"]
