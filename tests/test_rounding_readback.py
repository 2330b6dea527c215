"""scripts/rounding_readback.py: the rounding-change pass (`make test-rounding`) stops when its
settings move no kernel, and says what they moved."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "rounding_readback.py"


def load_script():
    spec = importlib.util.spec_from_file_location("rounding_readback", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*settings: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *settings], capture_output=True, text=True, timeout=120)


def test_settings_that_move_no_kernel_stop_the_pass():
    """A variable no library reads reruns the same kernels: the pass would prove nothing."""
    done = run_script("QARAC_ROUNDING_UNUSED=1")
    assert done.returncode == 1
    assert "kernels rounding differently under the settings: none" in done.stdout
    assert "changed no kernel's float32 result" in done.stderr


def test_scalar_kernels_are_read_back_and_moved_kernels_named():
    done = run_script("ATEN_CPU_CAPABILITY=default", "OMP_NUM_THREADS=1")
    settings_line = next(line for line in done.stdout.splitlines() if line.startswith("ATEN_CPU_CAPABILITY"))
    assert "torch DEFAULT, 1 thread(s)" in settings_line
    if done.returncode == 0:  # a CPU with vector kernels: softmax and layer norm leave them
        assert "softmax" in done.stdout.splitlines()[-1]


def test_moved_kernels_compares_fingerprints_by_name():
    script = load_script()
    as_is = {"fingerprints": {"softmax": "a", "sum": "b"}}
    assert script.moved_kernels(as_is, {"fingerprints": {"softmax": "a", "sum": "c"}}) == ["sum"]
    assert script.moved_kernels(as_is, as_is) == []


@pytest.mark.parametrize("words", [[], ["ATEN_CPU_CAPABILITY"]])
def test_malformed_settings_are_named(words):
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        load_script().parse_settings(words)
