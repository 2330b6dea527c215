"""`qarac-parity ... --spec module:PAIR`: the core's commands for any pair.

    qarac-parity live   --spec tests/user_pair.py:SPEC [--json R]
    qarac-parity record --spec tests/user_pair.py:SPEC --out BUNDLE [--overwrite]
    qarac-parity check  --spec tests/user_pair.py:SPEC BUNDLE [--json R] [--expect-digest HEX]

Exit status: 0 passed, 1 a check failed, 2 bad input (named in one line before any long work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from parity.bundle import BundleError
from parity.core.spec import SpecError, load_spec
from parity.core.weights import WeightMapError

COMMANDS = ("live", "record", "check")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qarac-parity", description="Parity of any Keras model and its PyTorch port.")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("bundle", nargs="?", type=Path, help="check: the pair bundle to check against")
    parser.add_argument("--spec", required=True, help="the pair: module:NAME or path/to/file.py:NAME")
    parser.add_argument("--out", type=Path, help="record: the bundle directory to write")
    parser.add_argument("--overwrite", action="store_true", help="record: replace an existing bundle")
    parser.add_argument("--json", type=Path, help="write the report as JSON here (atomically)")
    parser.add_argument("--expect-digest", help="check: refuse a bundle of another digest")
    parser.add_argument("--quiet", action="store_true", help="print the verdict only")
    args = parser.parse_intermixed_args(argv)
    if args.command == "check" and args.bundle is None:
        parser.error("check needs the bundle directory")
    if args.command == "record" and args.out is None:
        parser.error("record needs --out")
    if args.command != "check" and args.bundle is not None:
        parser.error(f"{args.command} takes no bundle argument")
    return args


def _fail(error: Exception) -> int:
    print(f"qarac-parity: error: {error}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = parse(argv)
    from parity.core import codec, pipeline
    from parity.core.report import failure_lines, print_report, verdict_line, write_json

    try:
        pair = load_spec(args.spec)
        if args.command == "check":
            run = codec.read(args.bundle, pair.name)
            if args.expect_digest and args.expect_digest.strip().lower() != run.meta["digest"]:
                raise BundleError(f"bundle {args.bundle} has digest {run.meta['digest']}, not {args.expect_digest}")
            pipeline.matched_map(pair, run)  # the table fits both models, or a one-line error now
        elif args.command == "record" and args.out.exists() and not args.overwrite:
            raise BundleError(f"--out {args.out} already exists; pass --overwrite to replace it")
    except (SpecError, BundleError, WeightMapError, ValueError, OSError) as error:
        return _fail(error)
    try:
        if args.command == "record":
            from parity.core import recording

            written = codec.write(recording.record(pair), args.out, overwrite=args.overwrite)
            print(f"qarac-parity: recorded pair {pair.name} to {written}")
            return 0
        if args.command == "check":
            report = pipeline.check(pair, run)
        else:
            from parity.core import recording

            report = recording.live(pair)
    except (BundleError, WeightMapError, ValueError) as error:
        return _fail(error)
    if not args.quiet:
        print_report(report, Console(width=None if sys.stdout.isatty() else 170))
    if args.json is not None:
        write_json(report, args.json)
    for line in failure_lines(report):
        print(f"  {line}")
    print(verdict_line(report))
    return 0 if report.passed else 1
