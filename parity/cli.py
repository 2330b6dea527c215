"""`qarac-parity`: prove, number by number, that the PyTorch QARAC computes what the legacy Keras QARAC computes.

    qarac-parity [--model DIR] [report flags]        live: record the legacy in memory, then check
    qarac-parity record [--model DIR] --out BUNDLE    run the legacy once, write a reference bundle
    qarac-parity check BUNDLE [report flags]          check the port against a bundle, without TensorFlow

Exit status: 0 when every parity check passes (the legacy's known missing
gradients are findings, not failures), 1 when a check fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from parity.cli_args import OUTPUT_FLAGS, parse_args, parse_check_args, parse_record_args
from parity.logs import require_tensorflow, silence_library_logs, start_tensorflow_quietly
from qarac.checkpoint import WEIGHTS_NAME, CheckpointError, read_roberta_config


def check_flags(args: argparse.Namespace, bundle: Path | None = None) -> None:
    """Every flag checked before any work, each failure one line.

    Args:
        bundle: the bundle `check` reads; no report may be written into it.

    Raises:
        ValueError: a tolerance that is not a finite number > 0, a batch size
            < 1, training steps < 0, a report path that cannot be written, a
            `--plot` not named .png, two reports on one file, or a report inside `bundle`.
    """
    if args.tolerance is not None and not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ValueError(f"--tolerance must be a finite number > 0, got {args.tolerance}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.train_steps < 0:
        raise ValueError(f"--train-steps must be >= 0, got {args.train_steps}")
    outputs = report_paths(args)
    for flag, path in outputs:
        check_writable(path, flag)
        if bundle is not None:
            check_outside_bundle(path, flag, bundle)
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ValueError(f"--plot {args.plot}: the plots are PNG images; name a .png file")
    check_distinct(outputs)


def report_paths(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(flag, path) of every file the report flags write; `--plot` writes two."""
    paths = [(f"--{flag}", getattr(args, flag)) for flag in OUTPUT_FLAGS if getattr(args, flag) is not None]
    if args.plot is not None:
        from parity.plot import stage_plot_path  # matplotlib (0.6 s) only where a plot is asked for

        paths.append(("--plot (its stage plot)", stage_plot_path(args.plot)))
    return paths


def check_distinct(outputs: list[tuple[str, Path]]) -> None:
    """Two reports on one file: one would silently replace the other."""
    seen: dict[Path, str] = {}
    for flag, path in outputs:
        key = path.resolve()
        if key in seen:
            raise ValueError(f"{seen[key]} and {flag} name the same file {path}; give each report its own file")
        seen[key] = flag


def check_outside_bundle(path: Path, flag: str, bundle: Path) -> None:
    """A report written into the bundle being checked would replace or add one of its files."""
    target, root = path.resolve(), bundle.resolve()
    inside = target == root or root in target.parents
    if not inside and path.exists() and root.is_dir():  # a hard link onto one of its files
        inside = any(other.is_file() and os.path.samefile(other, path) for other in root.rglob("*"))
    if inside:
        raise ValueError(f"{flag} {path} is inside the bundle {bundle} being checked; write reports elsewhere")


def check_writable(path: Path, flag: str) -> None:
    """`path` can be created or replaced: not a directory, in an existing directory where files can be created."""
    from qarac.checkpoint import file_write_problem

    problem = file_write_problem(path)
    if problem is not None:
        raise ValueError(f"{flag} {path}: {problem}")


def check_creatable(path: Path, flag: str) -> None:
    """A directory can be created at `path`: its nearest existing ancestor is a writable directory."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {ancestor} is not a writable directory")


def check_tensorflow() -> None:
    """The live run and `record` run the legacy: refuse, in one line, where TensorFlow is not installed."""
    require_tensorflow("the live run and `record` need",
                       "; without it, check the port against a reference bundle: qarac-parity check BUNDLE")


def check_keras3() -> None:
    """`--keras3` runs Keras 3, keras-hub and JAX: refuse, in one line, where the `keras3` extra is missing."""
    import importlib.metadata
    import importlib.util

    missing = [name for name in ("keras", "keras_hub", "jax", "tensorflow", "torch")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"--keras3 needs {', '.join(missing)} (the `keras3` extra: pip install -e '.[keras3]')")
    version = importlib.metadata.version("keras")
    if not version.startswith("3."):
        raise ValueError(f"--keras3 needs Keras 3, found keras {version} (the `keras3` extra: pip install -e '.[keras3]')")


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
    from parity.report import write_json, write_markdown

    def plots(report, path: Path) -> None:
        from parity.plot import plot_gradient_flow, plot_stage_errors, stage_plot_path

        plot_gradient_flow(report, path)
        plot_stage_errors(report, stage_plot_path(path))

    writers = {"json": write_json, "markdown": write_markdown, "plot": plots}
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


def _fail(error: BaseException) -> int:
    message = " ".join(str(error).split())  # one line
    print(f"qarac-parity: error: {message}", file=sys.stderr)
    return 2


def finish(report, args: argparse.Namespace) -> int:
    """Print, write each requested file, print the verdict line; the exit status."""
    from parity.report import print_report

    if not args.quiet:
        print_report(report, Console(width=None if sys.stdout.isatty() else 170))
    errors = write_outputs(report, args)
    print(verdict_line(report))
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 2
    return 0 if report.passed else 1


def main_record(argv: list[str]) -> int:
    from parity.bundle import MANIFEST_NAME, BundleError, replaceable

    args = parse_record_args(argv)
    if not args.verbose:
        silence_library_logs()
    try:
        check_flags(args)
        if args.out.exists() and not args.overwrite:
            raise BundleError(f"--out {args.out} already exists; pass --overwrite to replace it")
        if args.out.exists() and not replaceable(args.out):
            raise BundleError(f"--out {args.out} is not a reference bundle (no bundle {MANIFEST_NAME}); --overwrite "
                              "replaces a bundle only: choose another --out, or move its files away yourself")
        check_creatable(args.out, "--out")
        if args.model is None:
            from qarac.presets import tiny_model_dir

            args.model = tiny_model_dir()
        check_model_dir(args.model)
        check_tensorflow()
    except (CheckpointError, BundleError, ValueError, OSError) as error:
        return _fail(error)
    if not args.verbose:
        start_tensorflow_quietly()
    from parity.legacy.record import record_legacy
    from parity.reference import write_reference

    start = time.perf_counter()
    with Console(stderr=True).status("record") as status:
        run = record_legacy(args.model, args.seed, args.batch_size, args.train_steps,
                            progress=lambda stage: status.update(f"record: {stage}"))
        write_reference(run, args.out, overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"qarac-parity: recorded {args.out} ({size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return 0


def main_check(argv: list[str]) -> int:
    from parity.bundle import BundleError, check_same_model

    args = parse_check_args(argv)
    try:
        check_flags(args, bundle=args.bundle)
        device = check_device(args.device)
        from parity.reference import read_reference

        run = read_reference(args.bundle)
        check_digest(run.meta["bundle_digest"], args.expect_digest, args.bundle)
        if args.model is not None:
            from parity.bundle import Bundle
            from parity.inputs import tokenizer_for
            from qarac import QaracConfig

            architecture = QaracConfig.from_roberta_config(read_roberta_config(args.model))
            tokenizer = tokenizer_for(args.model, architecture)
            recorded = Bundle(meta=run.meta, directory=args.bundle)  # already read and checked above
            check_same_model(recorded, dict(architecture.base), tokenizer.get_vocab())
    except (CheckpointError, BundleError, ValueError, OSError) as error:
        return _fail(error)
    silence_library_logs()
    from parity.check import check

    with Console(stderr=True).status("check") as status:
        report = check(run, tolerance=args.tolerance, device=device,
                       progress=lambda stage: status.update(f"check: {stage}"))
    report.model = f"{args.bundle} (recorded from {run.meta['model']})"
    report.bundle = {"directory": str(args.bundle), "digest": run.meta["bundle_digest"]}
    print(f"qarac-parity: bundle {args.bundle} digest {run.meta['bundle_digest']}")
    return finish(report, args)


def check_digest(digest: str, expected: str | None, bundle: Path) -> None:
    """With `--expect-digest`, the bundle's digest must be the one given (hex, case-insensitive).

    Raises:
        ValueError: not a sha256 hex digest, or another digest than the bundle's.
    """
    if expected is None:
        return
    expected = expected.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"--expect-digest must be 64 hex digits (a sha256), got {expected!r}")
    if expected != digest:
        raise ValueError(f"bundle {bundle} has digest {digest}, not the expected {expected}: "
                         "it was recorded again or edited")


def check_device(name: str):
    """The torch device for `--device`, refusing one this machine does not have."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch {torch.__version__} sees no CUDA device here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {name}")
    return device


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg == "--spec" or arg.startswith("--spec=") for arg in argv):  # any pair: the model-agnostic core
        from parity.core.cli import main as main_pair

        return main_pair(["live", *argv] if argv[:1] not in (["record"], ["check"], ["live"]) else argv)
    if argv[:1] == ["record"]:
        return main_record(argv[1:])
    if argv[:1] == ["check"]:
        return main_check(argv[1:])
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
        check_tensorflow()
        if args.keras3:
            check_keras3()
    except (CheckpointError, ValueError, OSError) as error:
        return _fail(error)

    from parity.fit_probe import start_fit_probe, stop_fit_probe

    fit_probe = start_fit_probe(args.model, args.seed)  # its start-up overlaps the imports below
    try:
        if not args.verbose:
            start_tensorflow_quietly()
        from parity.live import run_parity

        tolerance = args.tolerance  # None: judged in noise-floor units
        with console.status("parity") as status:
            report = run_parity(args.model, tolerance=tolerance, seed=args.seed, batch_size=args.batch_size,
                                train_steps=args.train_steps, fit_probe=fit_probe, keras3=args.keras3,
                                progress=lambda stage: status.update(f"parity: {stage}"))
    finally:
        stop_fit_probe(fit_probe)
    return finish(report, args)


def console_main() -> None:
    """The `qarac-parity` command: `main`, then the process ends without the interpreter's teardown.

    Every file `main` writes is written atomically and closed before it returns, and the `fit` probe
    has ended; what the teardown would still do is free TensorFlow's, torch's and transformers'
    modules one by one, seconds on one core, writing nothing. Streams and logging are flushed first.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
