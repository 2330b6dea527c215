"""Portability on one machine (`parity.portability`): under each capped instruction set and thread
count, read back from the libraries that ran, the port passes `check` on the shipped bundle and a
fresh recording reproduces it by the shared rule. Run by `make test-portability` (a separate CI pass:
each setting is a fresh process recording the legacy, about a minute each)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity.portability import SETTINGS, readback, run_setting  # noqa: E402
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


@pytest.mark.portability
def test_the_thread_caps_reach_tensorflow():
    # TensorFlow reports 0 ("its default") for its pools whatever the environment: count its threads instead.
    assert readback(SETTINGS["one-thread"])["os_threads_after_tf_matmul"] < readback({})["os_threads_after_tf_matmul"]


@pytest.mark.portability
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_check_and_reproduction_hold_under_a_capped_setting(setting):
    # Each setting's result is kept (out/ is not tracked): the figures of docs/portability.md.
    out = SHIPPED.parents[1] / "out" / "portability"
    out.mkdir(parents=True, exist_ok=True)
    result = run_setting(setting, SHIPPED, out / f"{setting}.json")
    for key, value in EXPECTED[setting].items():
        assert result.readback[key] == value, (key, result.readback)
    assert result.check_passed, result.check_failed
    assert result.reproduction["passed"], result.reproduction
    assert result.reproduction_worst_ratio <= REPRODUCTION_BOUND
