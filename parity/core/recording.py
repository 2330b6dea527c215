"""Recording the original (the Keras runner, TensorFlow), and a live run: record, then check."""

from __future__ import annotations

from parity.core.judge import PairReport
from parity.core.keras_side import record as record_keras
from parity.core.pipeline import check, port_shapes
from parity.core.results import KerasRun
from parity.core.spec import Pair


def record(pair: Pair) -> KerasRun:
    """The original run on every batch: float32, float64, permuted rows; gradients per mode."""
    return record_keras(pair, port_shapes(pair))


def live(pair: Pair) -> PairReport:
    """Record the original and check the port against it, in one process (nothing written)."""
    return check(pair, record(pair))
