"""`check`: the port checked against a legacy run (`parity.results.LegacyRun`), one `ParityReport`.

The port runner runs the port once on the run's inputs (`parity.port_runner.run_port`, a
`PortRun`), then the comparator judges the two results (`parity.comparator.compare`) by the one
forward rule (`parity.tolerance.Tolerance`). The legacy side is data, whether just recorded
(`parity.live`) or read from a reference bundle (`parity.reference`); nothing here imports
TensorFlow (tests/test_layout.py).
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from parity.comparator import compare
from parity.port_runner import run_port
from parity.results import LegacyRun, ParityReport
from parity.tolerance import Tolerance
from qarac.validation import skip_value_checks


def check(run: LegacyRun, tolerance: float | None = None, device: str | torch.device = "cpu",
          progress: Callable[[str], None] = lambda stage: None, port: torch.nn.Module | None = None) -> ParityReport:
    """Compare the port with a recorded (or just recorded) legacy run; imports no TensorFlow.

    The port's value checks (finite vectors handed to the decoder, ...) are off inside: a port that
    produces NaN or inf gets its full report, naming the first stage where they appear.

    Args:
        tolerance: None (default) judges every forward value against `parity.tolerance.FLOOR_BOUND`
            times its measured noise floor; a number is a fixed absolute tolerance instead.
        device: where the port runs ("cpu", "cuda"); TF32 is turned off and read back there.
        port: a model in the legacy preset with `QaracTrainerModel`'s parameter names to check instead
            of the one built from the run (`parity.testing`); the run's weights are loaded into it.
    """
    start = time.perf_counter()
    with skip_value_checks():
        port_run = run_port(run, device, port, progress)  # validates the recorded architecture first
    progress("compare")
    compared = time.perf_counter()
    report = compare(run, port_run, Tolerance.for_model(run.meta["model_config"], tolerance))
    report.timings_s = {**port_run.timings_s, "compare": round(time.perf_counter() - compared, 3),
                        "total": round(time.perf_counter() - start, 3)}
    return report
