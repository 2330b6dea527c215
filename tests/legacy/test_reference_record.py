"""A fresh `record` reproduces the shipped reference bundle, judged by the shared rule."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity.bundle import read_bundle  # noqa: E402
from parity.record import record_legacy, to_bundle  # noqa: E402
from parity.reproduction import compare_bundles  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "reference" / "tiny"


@pytest.mark.slow
def test_a_fresh_record_reproduces_the_shipped_bundle():
    # Another CPU runs other kernels, so a fresh recording differs from the shipped one by float32
    # rounding: each array is judged against its meaningful scale (`parity.reproduction`: through both
    # recordings' float64 runs where they have one), never against its own rounding noise, never by bit equality.
    shipped = read_bundle(SHIPPED)
    settings = shipped.results["training"]["settings"]
    from qarac.presets import tiny_model_dir

    fresh = to_bundle(record_legacy(tiny_model_dir(), shipped.meta["seed"], shipped.meta["batch_size"],
                                    settings["steps"]))
    result = compare_bundles(shipped, fresh)
    assert result.passed, result.to_dict()
