"""Reference bundles: how long `record` and `check` take, and how large a bundle is.

What: for each model, `parity.legacy.record.record_legacy` + `write_reference` (what
`qarac-parity record` runs, TensorFlow side included), then `read_reference` +
`parity.check.check` (what `qarac-parity check` runs, no TensorFlow) in a fresh
process, so that check's time includes its imports and the bundle's hashing.
The live harness is `check(record_legacy(...))` in one process, so record + check
is what a live run costs, plus writing and reading the files.

How: wall-clock (`time.perf_counter`) around each step, one run each (the
harness is deterministic; the machine's load is in the JSON).

Run: .venv/bin/python -m bench.bundle_speed [--models tiny roberta-base] [--train-steps K]
Writes bench/results/bundle_speed.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results
from bench.parity_speed import model_dir

RECORD = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from parity.legacy.record import record_legacy
from parity.reference import write_reference
run = record_legacy(Path(sys.argv[1]), train_steps=int(sys.argv[3]))
write_reference(run, Path(sys.argv[2]), overwrite=True)
print(json.dumps({"record_s": time.perf_counter() - start, "record_stages_s": run.timings_s}))
"""

CHECK = """
import json, sys, time
start = time.perf_counter()
from parity.check import check
from parity.reference import read_reference
run = read_reference(sys.argv[1])
read = time.perf_counter() - start
report = check(run)
print(json.dumps({"read_s": read, "check_s": time.perf_counter() - start - read, "passed": report.passed,
                  "stages_s": report.timings_s,
                  "tensorflow_imported": any(m.startswith("tensorflow") for m in sys.modules)}))
"""


def _last_json(command: list[str]) -> dict[str, Any]:
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(model: str, root: Path, train_steps: int) -> dict[str, Any]:
    """Record, then check, each in its own process: at roberta-base shapes the recording's memory
    (about 13 GB) and the check's (about 18 GB) do not fit this 24 GB machine together."""
    directory = model_dir(model, root)
    bundle = root / f"bundle-{model}"
    recorded = _last_json([sys.executable, "-c", RECORD, str(directory), str(bundle), str(train_steps)])
    checked = _last_json([sys.executable, "-c", CHECK, str(bundle)])
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return {"model": model, "train_steps": train_steps, **recorded, "bundle_mib": size / 2**20, **checked,
            "record_plus_check_s": recorded["record_s"] + checked["read_s"] + checked["check_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny"], choices=["tiny", "roberta-base"])
    parser.add_argument("--train-steps", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qarac-bundle-bench-") as scratch:
        rows = [measure(model, Path(scratch), args.train_steps) for model in args.models]
    print_table("reference bundles: record and check", ["model", "record s", "read s", "check s", "record+check s",
                                                        "bundle MiB", "passed", "TF in check"],
                [(r["model"], r["record_s"], r["read_s"], r["check_s"], r["record_plus_check_s"], r["bundle_mib"],
                  str(r["passed"]), str(r["tensorflow_imported"])) for r in rows])
    path = write_results("bundle_speed", {"runs": rows, "command": "python -m bench.bundle_speed "
                                          + " ".join(sys.argv[1:] if argv is None else argv)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
