"""How sharp the parity verdict is: every planted porting bug of `parity.mutations`, judged by the
real `qarac-parity check` code path (`parity.harness.check`), floors included.

What: a `LegacyRun`, read from a bundle (default `reference/tiny`) or recorded live in memory
(`--live [--model DIR]`, e.g. roberta-base shapes); each mutant is planted in the port (a class- or
module-level patch of the code it runs, or an edit of the recorded weights it loads) and `check`
runs on the run as `qarac-parity check` does. Per mutant: the failing checks, the forward outputs
over their bound, the stage named (first introducing, else first over its bound in the real
forward), the worst forward error in float32 floor units, and the worst float64 relative error.

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
        from parity.record import record_legacy
        from qarac.presets import tiny_model_dir

        silence_library_logs()
        start_tensorflow_quietly()
        return record_legacy(args.model or tiny_model_dir(), batch_size=4)
    from parity.record import read_reference

    return read_reference(args.bundle)


def row(result: mutations.MutantResult) -> list[str]:
    ratio = "-" if result.worst_floor_ratio is None else f"{result.worst_floor_ratio:.3g}"
    rel = "-" if result.worst_float64_rel_err is None else f"{result.worst_float64_rel_err:.2g}"
    return [result.name, ", ".join(result.failed) or "NONE", str(len(result.forward_failed)), result.stage or "-",
            ratio, rel]


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
    names = ["clean", *(args.only or mutations.MUTANTS)]
    results = []
    for name in names:
        print(f"[mutations] {name}", file=sys.stderr, flush=True)
        if name == "clean":
            from parity.harness import check

            results.append(mutations.verdict("clean", check(run)))
        else:
            results.append(mutations.evaluate(name, run))
    seconds = time.perf_counter() - start
    print_table("Planted porting bugs, judged by check (bench.mutations)",
                ["mutant", "failing checks", "forward outputs failing", "stage named", "worst error / floor",
                 "worst float64 rel. error"], [row(r) for r in results])
    source = "live" if args.live else str(args.bundle)
    write_results("mutations" + (f"_{args.name}" if args.name else ""),
                  {"source": source, "model": str(run.meta["model"]), "record_s": record_s, "wall_s": seconds,
                   "mutants": [r.to_dict() for r in results]})
    clean, planted = results[0], results[1:]
    caught = all(r.caught for r in planted)
    forward = all(r.forward_failed or r.name in mutations.NOT_FORWARD for r in planted)
    return 0 if not clean.failed and caught and forward else 1


if __name__ == "__main__":
    sys.exit(main())
