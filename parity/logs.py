"""Library start-up kept quiet: TensorFlow's and transformers' log lines out of the report."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


def require_tensorflow(who: str, alternative: str = "") -> None:
    """One line naming the missing extra, before any work, where TensorFlow is not installed.

    `who` says what needs it, verb included ("the live run and `record` need")."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(f"{who} TensorFlow (the `legacy` extra: pip install -e '.[legacy]'){alternative}")


def silence_library_logs() -> None:
    """TensorFlow's C++ start-up lines (among them "failed call to cuInit", harmless on a
    CPU-only machine but worded like a failure), its Python warnings and transformers'
    load notices bury the report. Set before TensorFlow is imported; the fit probe's side
    process inherits the environment, and captures the "Gradients do not exist" warning
    through its own handler."""
    import logging

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null: TensorFlow's native libraries write their start-up
    lines ("All log messages before absl::InitializeLog()", oneDNN, cuInit) there directly,
    before TF_CPP_MIN_LOG_LEVEL is read."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow_quietly() -> None:
    """Import TensorFlow and initialise its devices with the native start-up lines silenced."""
    with native_stderr_silenced():
        from parity.legacy.tensors import tf  # the legacy runner's TensorFlow

        tf.config.list_physical_devices()  # the device scan is where "failed call to cuInit" comes from
