"""Precision parity (issue 32): a port that computes in lower precision in its float32 path only (the
float64 twin untouched) can no longer explain its error by its own rounding. Judged by the real
`check` on the shipped bundles (no TensorFlow), as `qarac-parity check` runs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from parity.check import check
from parity.reference import read_reference

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "reference" / "tiny"


@pytest.fixture(scope="module")
def run():
    return read_reference(SHIPPED)


@contextlib.contextmanager
def _bfloat16_linear():
    """`torch.nn.functional.linear` computing its products in bfloat16 for float32 inputs only, as
    autocast left on would (the issue's reproduction, written here independently of the mutation suite)."""
    original = torch.nn.functional.linear

    def linear(x, weight, bias=None):
        if x.dtype != torch.float32:
            return original(x, weight, bias)
        low = original(x.bfloat16(), weight.bfloat16(), None if bias is None else bias.bfloat16())
        return low.float()

    torch.nn.functional.linear = linear
    try:
        yield
    finally:
        torch.nn.functional.linear = original


def test_a_bfloat16_linear_port_fails_forward_or_precision_with_a_stage_named(run):
    with _bfloat16_linear():
        report = check(run)
    failed = {name for name, ok in report.checks.items() if not ok}
    assert failed & {"forward", "precision"}, failed
    assert report.first_introducing_stage or report.first_failing_stage, "no stage named"
