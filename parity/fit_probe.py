"""The legacy's `fit` step in a side process, started first: it needs nothing from the recording.

Only the standard library is imported here, so that the live command can start
the probe before its own imports of torch, transformers and TensorFlow (seconds
on one core) and the probe's own start-up overlaps them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def start_fit_probe(model_dir: Path, seed: int) -> subprocess.Popen:
    """One legacy `fit` step in a separate process (`python -m legacy_keras.reproduce`).

    The process builds the legacy trainer the same way (same variable names)
    and reports the variables TensorFlow's warning names. Running it beside the
    recording uses the second core while the eager legacy keeps the first busy;
    which variables get a gradient does not depend on the batch's values, nor on
    Grappler, which optimises the step's graph only after tracing raised the
    warning (so it is turned off), nor on whether `fit`'s own variables exist
    before its first step (they are created first, so the step is traced once
    instead of twice). Its log goes to a file: TensorFlow's warnings must never
    fill a pipe nobody reads until the end.
    """
    command = [sys.executable, "-m", "legacy_keras.reproduce", "--model", str(model_dir), "--seed", str(seed),
               "--no-epoch", "--no-graph-optimizer", "--trace-once"]
    log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
    # One thread: the probe is tracing (Python, one core) and one small step; a thread pool of its
    # own would only take the recording's second core from it.
    environment = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    probe = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=environment)
    probe.log = log  # read back by `finish_fit_probe`
    return probe


def finish_fit_probe(probe: subprocess.Popen, timeout: float = 900) -> list[str]:
    """The variables the probe's `fit` warning named (waits for it)."""
    try:
        stdout, _ = probe.communicate(timeout=timeout)
        if probe.returncode != 0:
            probe.log.seek(0)
            raise RuntimeError(f"the legacy fit probe failed (exit {probe.returncode}): {probe.log.read()[-2000:]}")
        return json.loads(stdout)["missing_gradients"]
    finally:
        stop_fit_probe(probe)


def stop_fit_probe(probe: subprocess.Popen) -> None:
    """End the probe if it still runs (a run that failed before reading it) and drop its log."""
    if probe.poll() is None:
        probe.kill()
        probe.wait()
    probe.log.close()
