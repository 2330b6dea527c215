"""`python -m parity.upgrade` records what the recording machine would have: the legacy's float64 run of
the bundle's own weights, batches and sharpened weight set, which is the same on every x86 CPU to round-off."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity.agreement import gradient_scale, judge, largest_magnitude, magnitude_scale  # noqa: E402
from parity.bundle import MANIFEST_NAME, read_bundle  # noqa: E402
from parity.exactness import FLOAT64_BOUND  # noqa: E402
from parity.sharp import VERSION_KEY  # noqa: E402
from parity.upgrade import ADDED_KEY, main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "reference" / "tiny"
# Recorded on the shipped bundle's machine from c0c5927: the same weights and batches as the shipped
# bundle, its sharpened case on that commit's weight set (version 1).
AMD = REPO / "tests" / "fixtures" / "reference-tiny-amd-epyc-c0c5927"


def _float64_scales(reference) -> dict:
    """Float64 against float64: each value's own magnitude (the analytically-zero gradients, the largest
    gradient of the set), bound `FLOAT64_BOUND` (round-off through a few layers)."""
    scales = {n: magnitude_scale(v, FLOAT64_BOUND) for n, v in reference.arrays.items() if n.startswith("legacy64/")}
    grads = {n[len("gradients64/tf/eager/"):]: v for n, v in reference.arrays.items() if n.startswith("gradients64/")}
    largest = largest_magnitude(grads.values())
    scales.update({f"gradients64/tf/eager/{n}": gradient_scale(n, v, largest, FLOAT64_BOUND) for n, v in grads.items()})
    return scales


@pytest.mark.slow
def test_upgrading_the_amd_recording_adds_the_shipped_float64_run(tmp_path, capsys):
    out = tmp_path / "amd"
    assert main([str(AMD), "--out", str(out)]) == 0, capsys.readouterr().err
    upgraded, shipped = read_bundle(out), read_bundle(SHIPPED)
    assert upgraded.schema_version == 2 and upgraded.meta[VERSION_KEY] == 1
    assert upgraded.meta[ADDED_KEY]["from_schema"] == 1
    scales = _float64_scales(shipped)
    # Every case computed on the shipped bundle's own weight set: its float64 run, to float64 round-off.
    same = sorted(name for name in scales if "/sharp/" not in name)
    assert len(same) > 200 and set(same) <= set(upgraded.arrays)
    judged = [judge(name, shipped.arrays[name], upgraded.arrays[name], scales[name]) for name in same]
    assert all(a.passed for a in judged), max(judged, key=lambda a: a.ratio)
    # The sharpened case is version 1's, as the AMD machine recorded it: the shipped (version 2) one's
    # float64 run differs from it far beyond any rounding.
    sharp = [name for name in scales if "/sharp/" in name and name.endswith("output/encode_decode")]
    assert sharp and all(judge(n, shipped.arrays[n], upgraded.arrays[n], magnitude_scale(shipped.arrays[n])).ratio > 1e-2
                         for n in sharp)


@pytest.mark.slow
def test_the_upgrade_refuses_a_recording_its_legacy_does_not_reproduce(tmp_path, capsys):
    # The planted bug: a schema-1 bundle that claims the current sharpened set, which its sharpened case
    # did not use. A float64 run of another computation would widen every floor of that case.
    claimed = Path(shutil.copytree(AMD, tmp_path / "claimed"))
    manifest = json.loads((claimed / MANIFEST_NAME).read_text())
    (claimed / MANIFEST_NAME).write_text(json.dumps({**manifest, VERSION_KEY: 2}))
    assert main([str(claimed), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "does not compute what bundle" in error and "sharp/" in error, error
    assert not (tmp_path / "out").exists()
