"""A fresh `record` reproduces the shipped reference bundle, judged by the shared rule."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity.bundle import read_bundle  # noqa: E402
from parity.reference import to_bundle  # noqa: E402
from parity.reproduction import compare_bundles  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "reference" / "tiny"


@pytest.mark.slow
def test_a_fresh_record_reproduces_the_shipped_bundle(fresh_recording):
    # Another CPU runs other kernels, so a fresh recording differs from the shipped one by float32
    # rounding: each array is judged against its meaningful scale (`parity.reproduction`: through both
    # recordings' float64 runs where they have one), never against its own rounding noise, never by bit equality.
    # (`fresh_recording`: `record_legacy` with the shipped bundle's seed, batch size and training steps.)
    shipped = read_bundle(SHIPPED)
    result = compare_bundles(shipped, to_bundle(fresh_recording))
    assert result.passed, result.to_dict()
