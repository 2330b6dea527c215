"""Portability on one machine (`parity.portability`): under each capped instruction set and thread
count, read back from the libraries that ran, the port passes `check` on the shipped bundle and a
fresh recording reproduces it by the shared rule. Run by `make test-portability` (a separate CI pass:
each setting is a fresh process recording the legacy, about two minutes each, three at a time)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity.portability import AS_IS, SETTINGS, first_equal, run_settings  # noqa: E402
from parity.reproduction import REPRODUCTION_BOUND  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "reference" / "tiny"
# What each setting must read back as, where it differs from the machine's own (see parity.portability).
EXPECTED = {
    "torch-scalar": {"torch_cpu_capability": "DEFAULT"},
    "onednn-sse41": {"onednn_isa": ["Intel SSE4.1"]},
    "tf-onednn-on": {"tf_onednn_ops": True},
    "tf-onednn-off": {"tf_onednn_ops": False},
    "one-thread": {"torch_threads": 1},
    "all-capped": {"torch_cpu_capability": "DEFAULT", "onednn_isa": ["Intel SSE4.1"], "tf_onednn_ops": True,
                   "torch_threads": 1},
}


def test_every_setting_has_an_expected_read_back():
    assert set(EXPECTED) == set(SETTINGS)


def test_only_a_read_back_seen_before_is_not_run_again():
    readbacks = {AS_IS: {"isa": "AVX2"}, "a": {"isa": "SSE"}, "b": {"isa": "AVX2"}, "c": {"isa": "SSE"},
                 "d": {"isa": "SSE", "threads": 1}}
    assert first_equal(readbacks) == {"b": AS_IS, "c": "a"}


@pytest.fixture(scope="module")
def portability():
    # Each setting's result is kept (out/ is not tracked): the figures of docs/portability.md.
    out = SHIPPED.parents[1] / "out" / "portability"
    out.mkdir(parents=True, exist_ok=True)
    return run_settings(sorted(SETTINGS), SHIPPED, out)


@pytest.mark.portability
def test_the_thread_caps_reach_tensorflow(portability):
    # TensorFlow reports 0 ("its default") for its pools whatever the environment: count its threads instead.
    one_thread = portability.results["one-thread"].readback
    assert one_thread["os_threads_after_tf_matmul"] < portability.as_is_readback["os_threads_after_tf_matmul"]


@pytest.mark.portability
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_check_and_reproduction_hold_under_a_capped_setting(portability, setting):
    result = portability.results[setting]
    for key, value in EXPECTED[setting].items():
        assert result.readback[key] == value, (key, result.readback)
    if result.same_as is not None:
        # The same kernels as a run made elsewhere (its read-back is identical): judged there.
        equal = portability.as_is_readback if result.same_as == AS_IS else portability.results[result.same_as].readback
        assert result.readback == equal
        if result.same_as == AS_IS:
            # The machine as it is: `make test` checks the shipped bundle (tests/test_reference.py) and
            # records it again (tests/legacy/test_reference_record.py) through the same functions.
            return
        result = portability.results[result.same_as]
    assert result.check_passed, result.check_failed
    assert result.reproduction["passed"], result.reproduction
    assert result.reproduction_worst_ratio <= REPRODUCTION_BOUND
