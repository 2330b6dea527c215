"""Wall time of the live parity run end to end, on the tiny model and on roberta-base shapes.

What: the `qarac-parity` command itself, as a user runs it (`qarac-parity --model DIR
--quiet --json REPORT`), in a fresh process: start-up and imports, the `fit` probe
beside it, the legacy recorded in memory, the port checked (noise floors, captured
stages, gradients in every mode, backward per stage, the deviation ledger). Models:
  tiny          the embedded tiny RoBERTa (`qarac.presets.tiny_model_dir`);
  roberta-base  roberta-base shapes (hidden 768, 12 layers, vocab 50265) with
                random weights (`qarac.presets.build_base_checkpoint(dir, "roberta-base", 0)`);
                building that checkpoint is not timed.

How: one run each (seconds to minutes). Kept besides the wall time: the harness's own
stage timings (`report.timings_s`), the verdict, the worst forward error in noise-floor
units, the worst gradient relative error, and the peak resident memory of the run's
process tree (the command's and the probe's, each its own peak).

Run: .venv/bin/python -m bench.parity_speed [--models tiny roberta-base]
Writes bench/results/parity_speed.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine, print_table, write_results
from qarac.presets import build_base_checkpoint, tiny_model_dir

MODELS = ("tiny", "roberta-base")


def model_dir(model: str, root: Path) -> Path:
    if model == "tiny":
        return tiny_model_dir()
    return build_base_checkpoint(root / model, model, 0)


def _worst_ratio(report: dict[str, Any]) -> float | None:
    ratios = [entry["floor_ratio"] for entry in report["forward"] + report["layers"] if entry.get("floor_ratio") is not None]
    return max(ratios, default=None)


def time_parity(model: str, root: Path) -> dict[str, Any]:
    directory = model_dir(model, root)
    report_path = root / f"{model}.json"
    command = [sys.executable, "-m", "parity.cli", "--model", str(directory), "--quiet", "--json", str(report_path)]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if not report_path.is_file():
        raise RuntimeError(f"qarac-parity wrote no report (exit {finished.returncode}): {finished.stderr[-2000:]}")
    report = json.loads(report_path.read_text())
    return {"model": model, "wall_s": seconds, "exit_code": finished.returncode, "stages_s": report["timings_s"],
            "passed": report["passed"], "checks": report["checks"], "worst_forward_floor_ratio": _worst_ratio(report),
            "worst_gradient_rel_err": max((entry["max_rel_err"] for entry in report["gradient_parity"]), default=None),
            # the largest peak of any process this bench has waited for so far (tiny runs first)
            "peak_rss_gib_largest_process": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}


def _merge_with_earlier(results: list[dict]) -> list[dict]:
    """Earlier results of the models not run this time are kept."""
    path = RESULTS_DIR / "parity_speed.json"
    earlier = json.loads(path.read_text())["results"] if path.is_file() else []
    fresh = {r["model"] for r in results}
    return [r for r in earlier if r["model"] not in fresh] + results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--note", default="", help="recorded in the JSON, e.g. whether other jobs ran")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        results = [time_parity(model, Path(root)) for model in args.models]
    print_table("qarac-parity end to end", ["model", "wall s", "harness s", "worst forward (floors)", "passed"],
                [(r["model"], r["wall_s"], r["stages_s"]["total"], r["worst_forward_floor_ratio"], r["passed"])
                 for r in results])
    command = "python -m bench.parity_speed " + " ".join(sys.argv[1:] if argv is None else argv)
    for result in results:  # each entry keeps the command and machine it was measured with
        result.update(command=command, note=args.note, machine=machine())
    path = write_results("parity_speed", {"results": _merge_with_earlier(results)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
