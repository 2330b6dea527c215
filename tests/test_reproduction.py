"""The shared rule (`parity.agreement`) and bundle reproduction (`parity.reproduction`): a recording
made on another CPU is accepted, a real difference anywhere is not, and each verdict names the array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parity import noise
from parity.agreement import RELATIVE_BOUND, floor_scale, gradient_scale, judge, magnitude_scale
from parity.bundle import read_bundle
from parity.reproduction import compare_bundles

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "reference" / "tiny"
# The same settings as `make reference`, recorded from the same commit on an Intel Xeon (AVX-512,
# TensorFlow's oneDNN ops on); the shipped bundle was recorded on an AMD EPYC (AVX2, oneDNN ops off).
INTEL = REPO / "tests" / "fixtures" / "reference-tiny-intel-xeon"
STAGE = "legacy/padded/stage_out/decoder base: layer 1 (offset_text)"
KEY_BIAS = "gradients/tf/eager/question_encoder.encoder.encoder.layer.1.attention.self.key.bias"


@pytest.fixture(scope="module")
def shipped():
    return read_bundle(SHIPPED)


@pytest.fixture
def intel():
    """A fresh read each test: the tests below edit its arrays."""
    return read_bundle(INTEL)


def _edited(bundle, name: str, change) -> None:
    value = bundle.arrays[name].copy()  # arrays stored once (`same_as`) are shared: edit a copy
    change(value)
    bundle.arrays[name] = value


def test_the_intel_recording_reproduces_the_shipped_bundle(shipped, intel, shipped_floors):
    # The rule this replaces (each array's error over its own largest magnitude, <= 1e-5) rejected
    # this pair at 1.54: the key-bias gradients are rounding noise, divided by themselves.
    result = compare_bundles(shipped, intel, shipped_floors, noise.FLOOR_BOUND)
    assert result.passed, result.to_dict()
    assert not result.problems
    assert result.worst("noise floor").ratio <= noise.FLOOR_BOUND
    # The pair really differs, by its whole rounding noise: the rule, not equality, accepts it.
    key_bias = next(a for a in result.agreements if a.name == KEY_BIAS)
    assert key_bias.error / np.abs(shipped.arrays[KEY_BIAS]).max() > 0.5
    assert key_bias.basis.startswith("largest gradient")


def test_a_stage_moved_by_ten_floors_is_rejected_and_named(shipped, intel, shipped_floors):
    floor = shipped_floors["padded"]["decoder base: layer 1 (offset_text)"]
    _edited(intel, STAGE, lambda value: value.__setitem__((0, 1, 2), value[0, 1, 2] + 10 * floor))
    result = compare_bundles(shipped, intel, shipped_floors, noise.FLOOR_BOUND)
    assert not result.passed
    assert [a.name for a in result.failures()] == [STAGE]
    assert result.failures()[0].ratio == pytest.approx(10, abs=noise.FLOOR_BOUND / 2)


def test_an_analytically_zero_gradient_of_real_size_is_rejected(shipped, intel, shipped_floors):
    largest = max(float(np.abs(v).max()) for k, v in shipped.arrays.items() if k.startswith("gradients/tf/eager/"))
    _edited(intel, KEY_BIAS, lambda value: value.__setitem__(0, 1e-3 * largest))
    result = compare_bundles(shipped, intel, shipped_floors, noise.FLOOR_BOUND)
    assert [a.name for a in result.failures()] == [KEY_BIAS]


def test_a_changed_token_id_or_result_is_rejected(shipped, intel, shipped_floors):
    name = "inputs/padded/question/input_ids"
    _edited(intel, name, lambda value: value.__setitem__((0, 1), value[0, 1] + 1))
    intel.results = {**intel.results, "fit_warning": intel.results["fit_warning"][:-1]}
    result = compare_bundles(shipped, intel, shipped_floors, noise.FLOOR_BOUND)
    assert [a.name for a in result.failures()] == [name]
    assert result.problems == ["result 'fit_warning' differs"]


def test_judge_divides_the_largest_error_by_the_scale():
    recorded = np.array([1.0, -2.0, 4.0], dtype=np.float32)
    recomputed = np.array([1.0, -2.5, 4.25], dtype=np.float32)
    judged = judge("x", recorded, recomputed, magnitude_scale(recorded))
    assert judged.error == 0.5 and judged.scale == 4.0 and judged.ratio == 0.125
    assert not judged.passed and judged.bound == RELATIVE_BOUND
    assert judge("x", recorded, recomputed, floor_scale(0.1, 8.0)).ratio == pytest.approx(5.0)


@pytest.mark.parametrize("recomputed", [[np.nan, 1.0], [np.inf, 1.0], [-np.inf, 1.0], [1.0, np.nan]])
def test_non_finite_values_agree_only_in_kind_and_place(recomputed):
    recorded = np.array([np.inf, 1.0], dtype=np.float32)
    judged = judge("x", recorded, np.array(recomputed, dtype=np.float32), magnitude_scale(recorded))
    assert judged.passed is (recomputed == [np.inf, 1.0])
    assert judge("x", recorded, recorded.copy(), magnitude_scale(recorded)).passed


def test_an_analytically_zero_gradient_is_scaled_by_the_largest_gradient_of_its_set():
    noise_value = np.array([3e-13], dtype=np.float32)
    assert gradient_scale("encoder.layer.0.attention.self.key.bias", noise_value, 20.0).value == 20.0
    assert gradient_scale("encoder.layer.0.attention.self.query.bias", noise_value, 20.0).value == pytest.approx(3e-13)


def test_the_port_passes_check_against_the_intel_recording():
    from parity.harness import check
    from parity.record import read_reference

    report = check(read_reference(INTEL))
    assert report.passed, [name for name, ok in report.checks.items() if not ok]
