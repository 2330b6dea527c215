"""The shipped reference bundle: `qarac-parity check` passes on it without TensorFlow (on either
transformers line), fails naming the stage when the port is wrong, and refuses bad bundles in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from parity.bundle import ARRAYS_NAME, MANIFEST_NAME, SCHEMA_VERSION, BundleError, sha256_of
from parity.cli import main
from parity.compare import ParityFailure
from parity.reference import read_reference
from parity.testing import assert_matches_reference
from qarac import QaracConfig, QaracTrainerModel

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "reference" / "tiny"


@pytest.fixture(scope="module")
def run():
    return read_reference(SHIPPED)


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    return Path(shutil.copytree(SHIPPED, tmp_path / "bundle"))


def test_check_passes_on_the_shipped_bundle_without_tensorflow(tmp_path):
    report = tmp_path / "report.json"
    digest = json.loads((SHIPPED / MANIFEST_NAME).read_text())["digest"]
    code = ("import sys\n"
            "from parity.cli import main\n"
            f"code = main(['check', {str(SHIPPED)!r}, '--quiet', '--json', {str(report)!r}, '--expect-digest', {digest!r}])\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('tensorflow', 'tf_keras', 'keras')))\n"
            "assert not bad, bad\n"
            "assert 'matplotlib' not in sys.modules, 'no --plot, yet matplotlib was imported'\n"
            "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PASSED" in result.stdout and f"digest {digest}" in result.stdout
    parsed = json.loads(report.read_text(), parse_constant=lambda constant: pytest.fail(f"non-JSON {constant}"))
    assert parsed["float64"]["passed"] and parsed["checks"]["float64_exactness"]
    assert parsed["passed"] and all(parsed["checks"].values())
    assert parsed["gradients"]["tf/fit"]["warning_names"]  # the seed's six, as recorded
    assert parsed["training"]["passed"] and parsed["training"]["batches_identical"]
    assert parsed["versions"]["legacy_tensorflow"].startswith("2.21")


def test_a_wrong_weight_in_the_port_fails_naming_its_stage(run, monkeypatch):
    from parity import port_runner
    from parity.check import check

    build = port_runner.build_port

    def with_planted_bug(recorded, device="cpu", port=None):
        pt_legacy, pt_default = build(recorded, device, port)
        with torch.no_grad():
            pt_legacy.decoder.decoder.encoder.layer[1].attention.self.query.weight[3, 5] += 0.05
        return pt_legacy, pt_default

    monkeypatch.setattr(port_runner, "build_port", with_planted_bug)
    report = check(run)
    assert not report.passed and not report.checks["forward"]
    assert report.first_failing_stage.startswith("padded: decoder base: layer 1"), report.first_failing_stage


def _fails(argv, capsys) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


def _edit_manifest(bundle: Path, change) -> None:
    """Edit and re-seal the manifest's digest, so the checks after the digest's are what is tested."""
    from parity.bundle import manifest_digest

    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    change(manifest)
    manifest["digest"] = manifest_digest(manifest)
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


def _rehash(bundle: Path, name: str) -> None:
    _edit_manifest(bundle, lambda m: m["files"].update({name: sha256_of(bundle / name)}))


def test_bad_bundles_exit_2_in_one_line_and_keep_the_earlier_report(bundle_copy, tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text("earlier report")
    argv = ["check", str(bundle_copy), "--json", str(report)]
    _edit_manifest(bundle_copy, lambda m: m.update(schema_version=99))
    assert "schema version 99" in _fails(argv, capsys)
    _edit_manifest(bundle_copy, lambda m: m.update(schema_version=SCHEMA_VERSION))
    (bundle_copy / "model" / "config.json").write_text("{}")
    assert "model/config.json was changed after recording" in _fails(argv, capsys)
    shutil.copy(SHIPPED / "model" / "config.json", bundle_copy / "model" / "config.json")
    arrays = bundle_copy / ARRAYS_NAME
    arrays.write_bytes(arrays.read_bytes()[:-4096])
    _rehash(bundle_copy, ARRAYS_NAME)
    assert "not a readable safetensors file" in _fails(argv, capsys)
    assert report.read_text() == "earlier report"


def test_a_missing_array_is_named(bundle_copy, capsys):
    import safetensors.numpy

    stored = safetensors.numpy.load_file(str(bundle_copy / ARRAYS_NAME))
    name = next(key for key in stored if key.startswith("gradients/tf/eager/"))
    del stored[name]
    safetensors.numpy.save_file(stored, str(bundle_copy / ARRAYS_NAME))
    _rehash(bundle_copy, ARRAYS_NAME)
    assert name in _fails(["check", str(bundle_copy)], capsys)


def test_a_bundle_of_another_model_or_vocabulary_is_refused(tmp_path, capsys):
    from qarac.presets import build_base_checkpoint

    wider = build_base_checkpoint(tmp_path / "wider", hidden_size=48, intermediate_size=53)
    assert "recorded for another model" in _fails(["check", str(SHIPPED), "--model", str(wider)], capsys)
    same = Path(shutil.copytree(SHIPPED / "model", tmp_path / "same"))
    tokenizer = json.loads((same / "tokenizer.json").read_text())
    vocabulary = tokenizer["model"]["vocab"]
    first, second = sorted(vocabulary, key=vocabulary.get)[10:12]
    vocabulary[first], vocabulary[second] = vocabulary[second], vocabulary[first]
    (same / "tokenizer.json").write_text(json.dumps(tokenizer))
    for stale in ("vocab.json", "merges.txt"):
        (same / stale).unlink(missing_ok=True)
    assert "another vocabulary" in _fails(["check", str(SHIPPED), "--model", str(same)], capsys)


def test_expect_digest_pins_the_bundle(capsys):
    other = "0" * 64
    assert f"has digest" in _fails(["check", str(SHIPPED), "--expect-digest", other], capsys)
    assert "64 hex digits" in _fails(["check", str(SHIPPED), "--expect-digest", "abc"], capsys)


def test_check_flags_are_validated_first(capsys):
    assert "--tolerance must be a finite number > 0" in _fails(["check", str(SHIPPED), "--tolerance", "nan"], capsys)
    assert "no CUDA device" in _fails(["check", str(SHIPPED), "--device", "cuda"], capsys) or torch.cuda.is_available()


def test_users_own_copy_of_the_port_against_the_bundle(run):
    config = QaracConfig(base=run.meta["model_config"])
    report = assert_matches_reference(QaracTrainerModel(config.legacy()), SHIPPED)
    assert report.passed and report.float64["passed"] and len(report.forward) == 24  # 4 cases x 6 outputs
    # judged by check itself: floors, stages, the sharpened case, the float64 run
    with pytest.raises(ParityFailure, match="decoder head: layer_0 .offset_text.") as failure:
        assert_matches_reference(QaracTrainerModel(config.legacy().replace(causal_decoder_head=True)), SHIPPED)
    assert "encode_decode" in str(failure.value) and "float64" in str(failure.value)


def test_the_bundle_holds_what_it_says(run):
    assert set(run.captures) == {"padded", "unpadded", "max_length", "all_padding_row", "sharp"}
    assert run.training is not None and len(run.training.eager) == len(run.training.batches) >= 1
    assert sum(value is None for value in run.gradients["tf/graph"].values()) == 6  # the seed's six
    assert sum(value is None for value in run.gradients["tf/eager"].values()) == 4  # the poolers only
    assert np.array_equal(run.inputs["unpadded"]["question"].attention_mask.numpy(),
                          np.ones_like(run.inputs["unpadded"]["question"].attention_mask.numpy()))
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 12 * 2**20, size  # a few MB in the repository (the float64 run included)
    assert run.float64 is not None and set(run.float64.captures) == set(run.captures)
    assert set(run.float64.substitutes) == {"gelu", "attention scale"}  # declared: see parity.legacy.float64
    assert sum(value is None for value in run.float64.gradients.values()) == 4  # the poolers only


def test_bundle_errors_name_the_directory(tmp_path):
    with pytest.raises(BundleError, match=str(tmp_path / "absent")):
        read_reference(tmp_path / "absent")


def test_check_reports_progress_per_gradient_mode(run):
    from parity.check import check

    seen: list[str] = []
    assert check(run, progress=seen.append).passed
    assert [s for s in seen if s.startswith("gradients")] == [
        "gradients", "gradients: pt/legacy (total and per objective)", "gradients: pt/default (total and per objective)",
        "gradients: backward per stage"]


def _moved_array(bundle: Path, name: str, shift: float) -> None:
    """`name` moved by `shift` in the bundle's arrays, the file's hash and the digest resealed."""
    import safetensors.numpy

    path = bundle / ARRAYS_NAME
    arrays = safetensors.numpy.load_file(str(path))
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    stored = manifest["arrays"][name].get("same_as", name)
    arrays[stored] = arrays[stored] + np.asarray(shift, dtype=arrays[stored].dtype)
    safetensors.numpy.save_file(arrays, str(path), metadata={"format": "np"})
    _rehash(bundle, ARRAYS_NAME)


def test_a_legacy_value_its_float64_run_cannot_explain_is_refused_naming_it(bundle_copy, capsys):
    """A reference output moved by +1000 (resealed) would widen its own floor (|legacy32 - legacy64| is
    part of it): the check passed with error 1000 = 1.0 floors. Now the bundle is refused, the value named."""
    _moved_array(bundle_copy, "legacy/padded/output/reasoning", 1000.0)
    with pytest.raises(BundleError, match=r"inconsistent.*padded.*output:trainer\.reasoning"):
        read_reference(bundle_copy)
    assert "inconsistent" in _fails(["check", str(bundle_copy)], capsys)
