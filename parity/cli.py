"""`qarac-parity`: prove, number by number, that the PyTorch QARAC computes what the legacy Keras QARAC computes.

Exit status: 0 when every parity check passes (the legacy's known missing
gradients are findings, not failures), 1 when a check fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from qarac.checkpoint import WEIGHTS_NAME, CheckpointError, read_roberta_config


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
    return parser.parse_args(argv)


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


def _quiet_library_logs() -> None:
    """transformers' load notices and TF's retracing warnings bury the report; the
    "Gradients do not exist" warning is captured in the fit probe's own process."""
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    console = Console(stderr=True)
    try:
        if args.model is None:
            from qarac.presets import tiny_model_dir

            args.model = tiny_model_dir()
        check_model_dir(args.model)
        if args.batch_size < 1 or args.train_steps < 0:
            raise ValueError("--batch-size must be >= 1 and --train-steps >= 0")
    except (CheckpointError, ValueError, OSError) as error:
        print(f"qarac-parity: error: {error}", file=sys.stderr)
        return 2

    _quiet_library_logs()
    from parity.harness import run_parity
    from parity.report import print_report, write_json, write_markdown

    tolerance = args.tolerance if args.tolerance is not None else default_tolerance(args.model)
    with console.status("parity") as status:
        report = run_parity(args.model, tolerance=tolerance, seed=args.seed, batch_size=args.batch_size,
                            train_steps=args.train_steps, progress=lambda stage: status.update(f"parity: {stage}"))
    if not args.quiet:
        print_report(report, Console(width=None if sys.stdout.isatty() else 170))
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        write_markdown(report, args.markdown)
    if args.plot:
        from parity.plot import plot_gradient_flow

        plot_gradient_flow(report, args.plot)
    if not report.passed:
        failed = [name for name, ok in report.checks.items() if not ok]
        print(f"qarac-parity: failed checks: {', '.join(failed)}", file=sys.stderr)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
