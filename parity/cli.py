"""`qarac-parity`: prove, number by number, that the PyTorch QARAC computes what the legacy Keras QARAC computes.

Exit status: 0 when every parity check passes (the legacy's known missing
gradients are findings, not failures), 1 when a check fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Iterator

from rich.console import Console

from qarac.checkpoint import WEIGHTS_NAME, CheckpointError, read_roberta_config

# The report files, each written on its own.
OUTPUT_FLAGS = ("json", "markdown", "plot")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qarac-parity", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="local HF RoBERTa directory (default: the embedded tiny RoBERTa)")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report as Markdown here")
    parser.add_argument("--plot", type=Path, default=None, help="write the gradient-flow plot (PNG) here")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="absolute forward tolerance (default: 1e-5 for the tiny model, 1e-4 for larger ones)")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per objective in the compared batch")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="also compare K training steps of legacy fit and the port (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no terminal tables, only the verdict line")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's and transformers' own log lines (silenced by default)")
    return parser.parse_args(argv)


def check_flags(args: argparse.Namespace) -> None:
    """Every flag checked before any work, each failure one line.

    Raises:
        ValueError: a tolerance that is not a finite number > 0, a batch size
            < 1, training steps < 0, or a report path that cannot be written.
    """
    if args.tolerance is not None and not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ValueError(f"--tolerance must be a finite number > 0, got {args.tolerance}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.train_steps < 0:
        raise ValueError(f"--train-steps must be >= 0, got {args.train_steps}")
    for flag in OUTPUT_FLAGS:
        path = getattr(args, flag)
        if path is not None:
            check_writable(path, f"--{flag}")


def check_writable(path: Path, flag: str) -> None:
    """`path` can be created or replaced: not a directory, in an existing writable directory."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; name a file")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: directory {parent} is not writable")


def check_model_dir(model_dir: Path) -> None:
    """Fail fast, with one line, on a directory the harness cannot use: no safetensors
    weights, or weights that are not exactly the base's (both sides are built with the pooler)."""
    from qarac.base_weights import check_base_weights

    config = read_roberta_config(model_dir)
    if not (model_dir / WEIGHTS_NAME).is_file():
        pickled = sorted(p.name for p in model_dir.glob("*.bin"))
        hint = f" (found {pickled}: pickled weights are not loaded; convert them to safetensors)" if pickled else ""
        raise CheckpointError(f"{model_dir} has no {WEIGHTS_NAME}{hint}")
    check_base_weights(model_dir, config, pooler=True)


def default_tolerance(model_dir: Path) -> float:
    from parity.compare import TINY_TOLERANCE
    from parity.harness import ROBERTA_BASE_TOLERANCE

    config = read_roberta_config(model_dir)
    tiny = config.hidden_size <= 64 and config.num_hidden_layers <= 2
    return TINY_TOLERANCE if tiny else ROBERTA_BASE_TOLERANCE


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
        from legacy_keras._tf import tf

        tf.config.list_physical_devices()  # the device scan is where "failed call to cuInit" comes from


def verdict_line(report) -> str:
    """The one line every run prints, --quiet included."""
    total = report.timings_s.get("total", float("nan"))
    if report.passed:
        return f"qarac-parity: PASSED, {len(report.checks)} checks, {total:.1f} s"
    failed = [name for name, ok in report.checks.items() if not ok]
    return f"qarac-parity: FAILED checks: {', '.join(failed)} ({total:.1f} s)"


def write_outputs(report, args: argparse.Namespace) -> list[str]:
    """Each requested file written on its own (atomically): one failing leaves the others.

    Returns:
        One line per file that could not be written.
    """
    from parity.plot import plot_gradient_flow
    from parity.report import write_json, write_markdown

    writers = {"json": write_json, "markdown": write_markdown, "plot": plot_gradient_flow}
    errors = []
    for flag in OUTPUT_FLAGS:
        path = getattr(args, flag)
        if path is None:
            continue
        try:
            writers[flag](report, path)
        except OSError as error:
            errors.append(f"qarac-parity: error: could not write --{flag} {path}: {error}")
    return errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        silence_library_logs()
    console = Console(stderr=True)
    try:
        check_flags(args)
        if args.model is None:
            from qarac.presets import tiny_model_dir

            args.model = tiny_model_dir()
        check_model_dir(args.model)
    except (CheckpointError, ValueError, OSError) as error:
        message = " ".join(str(error).split())  # one line
        print(f"qarac-parity: error: {message}", file=sys.stderr)
        return 2

    if not args.verbose:
        start_tensorflow_quietly()
    from parity.harness import run_parity
    from parity.report import print_report

    tolerance = args.tolerance if args.tolerance is not None else default_tolerance(args.model)
    with console.status("parity") as status:
        report = run_parity(args.model, tolerance=tolerance, seed=args.seed, batch_size=args.batch_size,
                            train_steps=args.train_steps, progress=lambda stage: status.update(f"parity: {stage}"))
    if not args.quiet:
        print_report(report, Console(width=None if sys.stdout.isatty() else 170))
    errors = write_outputs(report, args)
    print(verdict_line(report))
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 2
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
