"""An older bundle checked as it was recorded: the sharpened weight set of the bundle's own version
(`parity.sharp`), and the float64 run `parity.upgrade` added to the Intel Xeon recording of c0c5927,
judged by `qarac-parity check` itself (no TensorFlow here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from parity.bundle import MANIFEST_NAME, manifest_digest, read_bundle
from parity.cli import main
from parity.sharp import VERSION_KEY, checked_version, sharpened_weights, version_of_bundle
from parity.upgrade import ADDED_KEY
from parity.upgrade import main as upgrade_main
from qarac import QaracTrainerModel

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Recorded on an Intel Xeon from main at c0c5927 (schema 1, sharpened set 1), its float64 run added
# on an AMD EPYC by `python -m parity.upgrade` (schema 2).
INTEL = FIXTURES / "reference-tiny-intel-xeon"
AMD_SCHEMA_1 = FIXTURES / "reference-tiny-amd-epyc-c0c5927"


def _one_line_error(code: int, capsys) -> str:
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


def _with_manifest(source: Path, destination: Path, change) -> Path:
    """A copy of `source` whose manifest `change` edited, its digest sealed again (a valid bundle)."""
    shutil.copytree(source, destination)
    manifest = json.loads((destination / MANIFEST_NAME).read_text())
    change(manifest)
    manifest["digest"] = manifest_digest(manifest)
    (destination / MANIFEST_NAME).write_text(json.dumps(manifest))
    return destination


def test_the_intel_bundle_records_its_sharpened_set_and_where_its_float64_run_came_from():
    bundle = read_bundle(INTEL)
    assert bundle.schema_version == 2 and bundle.meta[VERSION_KEY] == 1
    added = bundle.meta[ADDED_KEY]
    assert added["from_schema"] == 1 and added["cpu"] and added["commit"] != "unknown"
    assert {name.split("/")[1] for name in bundle.arrays if name.startswith("legacy64/")} == {
        "padded", "unpadded", "max_length", "all_padding_row", "sharp"}
    # Beside the float64 run, the arrays a schema-1 recording holds (the AMD one of the same commit).
    recorded = read_bundle(AMD_SCHEMA_1, schemas=(1,))
    assert {n for n in bundle.arrays if not n.startswith(("legacy64/", "gradients64/"))} == set(recorded.arrays)


@pytest.mark.parametrize("version, status", [(1, 0), (2, 1)])
def test_check_passes_on_the_intel_recording_with_its_own_sharpened_set_only(version, status, tmp_path):
    # As recorded (version 1) `check` passes, through the CLI's own path; told the other version
    # (a bundle whose field was changed: the planted bug), the sharpened case fails, and only it.
    bundle = _with_manifest(INTEL, tmp_path / "bundle", lambda m: m.update({VERSION_KEY: version}))
    report = tmp_path / "report.json"
    assert main(["check", str(bundle), "--quiet", "--json", str(report)]) == status
    parsed = json.loads(report.read_text())
    failed = {name for name, ok in parsed["checks"].items() if not ok}
    if status == 0:
        assert parsed["passed"] and not failed
        # every floor holds the legacy's float32 error against the bundle's own float64 run
        assert all("float64" in variants for case in parsed["noise_floors"].values()
                   for variants in case["legacy"].values())
        return
    assert {"forward", "float64_exactness"} <= failed
    assert parsed["first_failing_stage"].startswith("sharp: ")
    assert all(entry["first_failing_stage"] is None for case, entry in parsed["localisation"].items() if case != "sharp")


def test_an_unknown_sharpened_set_version_is_refused_in_one_line(tmp_path, capsys):
    bundle = _with_manifest(INTEL, tmp_path / "bundle", lambda m: m.update({VERSION_KEY: 3}))
    error = _one_line_error(main(["check", str(bundle)]), capsys)
    assert "sharpened weight set version 3 is unknown" in error and str(bundle) in error


def test_a_schema_1_bundle_is_refused_naming_the_upgrade(capsys):
    error = _one_line_error(main(["check", str(AMD_SCHEMA_1)]), capsys)
    assert "schema version 1" in error and "python -m parity.upgrade" in error


def test_the_upgrade_never_writes_over_an_existing_path(tmp_path, capsys):
    before = (AMD_SCHEMA_1 / MANIFEST_NAME).read_bytes()
    for out in (AMD_SCHEMA_1, tmp_path):
        error = _one_line_error(upgrade_main([str(AMD_SCHEMA_1), "--out", str(out)]), capsys)
        assert "already exists" in error
    assert (AMD_SCHEMA_1 / MANIFEST_NAME).read_bytes() == before
    error = _one_line_error(upgrade_main([str(INTEL), "--out", str(tmp_path / "new")]), capsys)
    assert "schema 2 already" in error and not (tmp_path / "new").exists()


def test_a_bundle_without_the_field_used_its_schemas_sharpened_set():
    assert version_of_bundle({}, 1) == 1 and version_of_bundle({}, 2) == 2
    assert version_of_bundle({VERSION_KEY: 1}, 2) == 1
    for bad in (3, 0, "2", True, None):
        with pytest.raises(ValueError, match="sharpened weight set version .* is unknown"):
            checked_version(bad)


def test_version_1_rescales_the_matrices_only_and_version_2_also_moves_the_constants(legacy_config):
    torch.manual_seed(0)
    model = QaracTrainerModel(legacy_config)
    own = {name: p.detach().clone() for name, p in model.named_parameters()}
    sets = {}
    for version in (1, 2):
        with sharpened_weights(model, version):
            sets[version] = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert all(torch.equal(p, own[name]) for name, p in model.named_parameters())  # restored after each
    constant = [n for n, p in own.items() if p.dim() == 1 and p.numel() > 1 and bool((p == p[0]).all())]
    assert constant  # zero biases, unit layer-norm gains
    for name, value in own.items():
        if value.dim() == 2:  # the same rescaling in both versions
            assert torch.equal(sets[1][name], sets[2][name]) and not torch.equal(sets[1][name], value), name
        else:
            assert torch.equal(sets[1][name], value), name  # version 1 leaves every other parameter
    assert all(not torch.equal(sets[2][name], own[name]) for name in constant)
    with pytest.raises(ValueError, match="version 3 is unknown"):
        with sharpened_weights(model, 3):
            pass
    assert all(np.array_equal(p.detach().numpy(), own[n].numpy()) for n, p in model.named_parameters())
