"""A fresh `record` reproduces the shipped reference bundle, and the live harness is record + check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity.bundle import read_bundle  # noqa: E402
from parity.record import record_legacy, to_bundle  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "reference" / "tiny"
# TensorFlow's eager CPU kernels on one machine repeat bit for bit; a recording made on another
# CPU (other oneDNN kernels) may differ by float32 rounding. Arrays must match within this
# relative bound (of each array's largest magnitude); most match exactly.
RECORD_REPRODUCTION_TOLERANCE = 1e-5


@pytest.mark.slow
def test_a_fresh_record_reproduces_the_shipped_bundle():
    shipped = read_bundle(SHIPPED)
    settings = shipped.results["training"]["settings"]
    from qarac.presets import tiny_model_dir

    fresh = to_bundle(record_legacy(tiny_model_dir(), shipped.meta["seed"], shipped.meta["batch_size"],
                                    settings["steps"]))
    assert set(fresh.arrays) == set(shipped.arrays)
    worst, exact = 0.0, 0
    for name, value in shipped.arrays.items():
        other = fresh.arrays[name]
        assert other.shape == value.shape and other.dtype == value.dtype, name
        scale = max(float(np.abs(value).max(initial=0.0)), np.finfo(np.float32).tiny)
        worst = max(worst, float(np.abs(other.astype(np.float64) - value).max(initial=0.0)) / scale)
        exact += np.array_equal(other, value)
    assert worst <= RECORD_REPRODUCTION_TOLERANCE, worst
    assert exact >= 0.9 * len(shipped.arrays)
    assert fresh.results["fit_warning"] == shipped.results["fit_warning"]
    assert fresh.results["gradients_missing"] == shipped.results["gradients_missing"]
    for fresh_step, shipped_step in zip(fresh.results["training"]["eager"], shipped.results["training"]["eager"]):
        for key, value in shipped_step.items():
            assert abs(fresh_step[key] - value) <= RECORD_REPRODUCTION_TOLERANCE * max(1.0, abs(value)), key
