"""`qarac-parity`'s command line: the live run's, `record`'s and `check`'s flags (`parity.cli` runs them)."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = ("`qarac-parity`: prove, number by number, that the PyTorch QARAC computes what the legacy Keras "
               "QARAC computes.")

# The report files, each written on its own.
OUTPUT_FLAGS = ("json", "markdown", "plot")


def _add_report_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report as Markdown here")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the gradient-flow plot (PNG) here, and the per-stage error plot beside it "
                             "(*_stages.png)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="fixed absolute forward tolerance, overriding the default verdict "
                             "(each value within parity.tolerance.FLOOR_BOUND times its measured noise floor)")
    parser.add_argument("--quiet", action="store_true", help="no terminal tables, only the verdict line")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="local HF RoBERTa directory (default: the embedded tiny RoBERTa)")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per objective in the compared batch")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="also compare K training steps of legacy fit and the port (0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="heads' initialisation, batch choice, shuffles")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's and transformers' own log lines (silenced by default)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qarac-parity", description=DESCRIPTION,
                                     epilog="Subcommands: `qarac-parity record --help`, `qarac-parity check --help`.")
    _add_run_flags(parser)
    parser.add_argument("--keras3", action="store_true",
                        help="also run QARAC's original design on Keras 3's TensorFlow, PyTorch and JAX backends "
                             "(one process each) against the same legacy recording: forward and gradient parity, "
                             "census columns keras3/<backend>/<mode> (needs the `keras3` extra)")
    _add_report_flags(parser)
    return parser.parse_args(argv)


def parse_record_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qarac-parity record",
                                     description="Run the legacy side once and write a reference bundle "
                                                 "(needs the `legacy` extra).")
    _add_run_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="the bundle directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    args = parser.parse_args(argv)
    args.tolerance, args.json, args.markdown, args.plot = None, None, None, None
    return args


def parse_check_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qarac-parity check",
                                     description="Check the port against a reference bundle; imports no TensorFlow.")
    parser.add_argument("bundle", type=Path, help="a reference bundle directory (`qarac-parity record`)")
    parser.add_argument("--model", type=Path, default=None,
                        help="refuse the bundle unless it was recorded for this HF RoBERTa directory's "
                             "architecture and vocabulary")
    parser.add_argument("--device", default="cpu", help="where the port runs: cpu (default) or cuda (TF32 off)")
    parser.add_argument("--expect-digest", default=None, metavar="HEX",
                        help="refuse the bundle unless its digest (printed by every check; it covers every "
                             "file and recorded result) is HEX: pins a CI to one reference")
    _add_report_flags(parser)
    args = parser.parse_args(argv)
    args.batch_size, args.train_steps = 1, 0  # recorded in the bundle
    return args
