"""How sharp the parity verdict is: every planted porting bug of `parity.mutations`, judged by the
real `qarac-parity check` code path (`parity.check.check`), floors included.

What: a `LegacyRun`, read from a bundle (default `reference/tiny`) or recorded live in memory
(`--live [--model DIR]`, e.g. roberta-base shapes); each mutant is planted in the port (a class- or
module-level patch of the code it runs, or an edit of the recorded weights it loads) and `check`
runs on the run as `qarac-parity check` does. Per mutant: the failing checks, the forward outputs
over their bound, the stage named (first introducing, else first over its bound in the real
forward), the first stage over the precision bound (and over the spread bound), the worst forward
error in float32 floor units, and the worst float64 relative error. The precision mutants
(`parity.mutations.PRECISION_MUTANTS`) must fail forward or precision parity with a stage named; the
benign variants (`parity.mutations.BENIGN`, the port written differently but correctly) must pass.

Run: .venv/bin/python -m bench.mutations [--bundle DIR | --live [--model DIR]] [--only NAME ...]
Writes bench/results/mutations[_<name>].json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import print_table, write_results
from parity import mutations


def load_run(args):
    if args.live:
        from parity.cli import silence_library_logs, start_tensorflow_quietly
        from parity.legacy.record import record_legacy
        from qarac.presets import tiny_model_dir

        silence_library_logs()
        start_tensorflow_quietly()
        return record_legacy(args.model or tiny_model_dir(), batch_size=4)
    from parity.reference import read_reference

    return read_reference(args.bundle)


def row(result: mutations.MutantResult) -> list[str]:
    ratio = "-" if result.worst_floor_ratio is None else f"{result.worst_floor_ratio:.3g}"
    rel = "-" if result.worst_float64_rel_err is None else f"{result.worst_float64_rel_err:.2g}"
    return [result.name, ", ".join(result.failed) or "NONE", str(len(result.forward_failed)), result.stage or "-",
            result.precision_stage or "-", result.nondeterministic_stage or "-", ratio, rel]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("reference/tiny"))
    parser.add_argument("--live", action="store_true", help="record the legacy in memory instead of reading a bundle")
    parser.add_argument("--model", type=Path, default=None, help="with --live: the HF RoBERTa directory")
    parser.add_argument("--only", nargs="*", default=None, help="these mutants only")
    parser.add_argument("--name", default="", help="suffix of the results file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run = load_run(args)
    record_s = time.perf_counter() - start
    names = ["clean", *(args.only or mutations.PLANTED)]
    results = []
    for name in names:
        print(f"[mutations] {name}", file=sys.stderr, flush=True)
        if name == "clean":
            from parity.check import check

            results.append(mutations.verdict("clean", check(run)))
        else:
            results.append(mutations.evaluate(name, run))
    seconds = time.perf_counter() - start
    print_table("Planted porting bugs, judged by check (bench.mutations)",
                ["mutant", "failing checks", "forward outputs failing", "stage named", "first stage over precision bound",
                 "first stage over spread bound", "worst error / floor", "worst float64 rel. error"],
                [row(r) for r in results])
    source = "live" if args.live else str(args.bundle)
    write_results("mutations" + (f"_{args.name}" if args.name else ""),
                  {"source": source, "model": str(run.meta["model"]), "record_s": record_s, "wall_s": seconds,
                   "mutants": [r.to_dict() for r in results]})
    clean = results[0]
    planted = [r for r in results[1:] if r.name in mutations.MUTANTS]
    precision = [r for r in results[1:] if r.name in mutations.PRECISION_MUTANTS]
    benign = [r for r in results[1:] if r.name in mutations.BENIGN]
    caught = all(r.caught for r in planted)
    forward = all(r.forward_failed or r.name in mutations.NOT_FORWARD for r in planted)
    located = all({"forward", "precision", "spread"} & set(r.failed) and r.located for r in precision)
    benign_failing = [r.name for r in benign if r.failed]
    if benign_failing:
        print(f"[mutations] benign variants failing check: {benign_failing}", file=sys.stderr)
    return 0 if not clean.failed and caught and forward and located and not benign_failing else 1


if __name__ == "__main__":
    sys.exit(main())
