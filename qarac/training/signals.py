"""Stopping on SIGINT/SIGTERM at a step boundary, after a checkpoint is saved."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from qarac.training.runtime import Runtime


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training at a step boundary, after a checkpoint was saved."""

    def __init__(self, signal_name: str, step: int, output_dir: Path):
        super().__init__(f"stopped by {signal_name} after step {step}; checkpoint saved in {output_dir}; "
                         "continue with --resume")
        self.signal_name, self.step, self.output_dir = signal_name, step, output_dir


class StopSignals:
    """Within this block SIGINT/SIGTERM only ask training to stop at the next step
    boundary (a step half done cannot be saved); a second signal acts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can be set there only
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def _handle(self, number: int, frame) -> None:
        self.received = signal.Signals(number).name
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def requested(self, runtime: Runtime) -> bool:
        """Whether to stop now; under DDP, whether any rank got a signal (all stop at one step)."""
        requested = self.received is not None
        if runtime.distributed:
            flag = torch.tensor([float(requested)], device=runtime.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested
