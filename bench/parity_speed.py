"""Wall time of the parity harness end to end, on the tiny model and on roberta-base shapes.

What: `parity.harness.run_parity` (what `qarac-parity` runs: weight bridge,
forward, layer localisation, gradients in every execution mode, the
`fit` probe in a subprocess, the deviation ledger) from the model directory
to the finished report, once per model:
  tiny          the embedded tiny RoBERTa (`qarac.presets.tiny_model_dir`);
  roberta-base  roberta-base shapes (hidden 768, 12 layers, vocab 50265) with
                random weights (`qarac.presets.build_base_checkpoint(dir, "roberta-base", 0)`);
                building that checkpoint is not timed.

How: one run each (the harness takes seconds to minutes; its own stage
timings, `report.timings_s`, are kept). Besides the time it records the
forward comparison of every output (`report.forward`: max absolute and
relative error per output and case), which is what the roberta-base
tolerance constant (`parity.harness.ROBERTA_BASE_TOLERANCE`) is set from,
whether each harness check passed, and the eight parameters whose legacy
gradients differ most (`report.gradient_parity`, by relative error).

Run: .venv/bin/python -m bench.parity_speed [--models tiny roberta-base]
Writes bench/results/parity_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine, print_table, write_results
from parity.compare import TINY_TOLERANCE
from parity.harness import ROBERTA_BASE_TOLERANCE, run_parity
from qarac.presets import build_base_checkpoint, tiny_model_dir

TOLERANCES = {"tiny": TINY_TOLERANCE, "roberta-base": ROBERTA_BASE_TOLERANCE}


def model_dir(model: str, root: Path) -> Path:
    if model == "tiny":
        return tiny_model_dir()
    return build_base_checkpoint(root / model, model, 0)


def time_parity(model: str, root: Path) -> dict[str, Any]:
    directory = model_dir(model, root)
    start = time.perf_counter()
    report = run_parity(directory, tolerance=TOLERANCES[model],
                        progress=lambda stage: print(f"[{model}] {stage}", file=sys.stderr, flush=True))
    seconds = time.perf_counter() - start
    forward = [{key: entry[key] for key in ("name", "max_abs_err", "max_rel_err", "padding_max_abs_err", "passed")
                if key in entry} for entry in report.forward]
    return {"model": model, "wall_s": seconds, "tolerance": TOLERANCES[model], "stages_s": report.timings_s,
            "passed": report.passed, "checks": report.checks, "forward": forward,
            "forward_max_abs_err": max(entry["max_abs_err"] for entry in report.forward),
            "gradient_parity_worst": sorted(report.gradient_parity, key=lambda entry: -entry["max_rel_err"])[:8]}


def _merge_with_earlier(results: list[dict]) -> list[dict]:
    """Earlier results of the models not run this time are kept."""
    path = RESULTS_DIR / "parity_speed.json"
    earlier = json.loads(path.read_text())["results"] if path.is_file() else []
    fresh = {r["model"] for r in results}
    return [r for r in earlier if r["model"] not in fresh] + results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TOLERANCES), choices=list(TOLERANCES))
    parser.add_argument("--note", default="", help="recorded in the JSON, e.g. whether other jobs ran")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        results = [time_parity(model, Path(root)) for model in args.models]
    print_table("qarac-parity end to end", ["model", "wall s", "forward max abs err", "tolerance", "passed"],
                [(r["model"], r["wall_s"], f"{r['forward_max_abs_err']:.2e}", f"{r['tolerance']:.0e}", r["passed"])
                 for r in results])
    command = "python -m bench.parity_speed " + " ".join(sys.argv[1:] if argv is None else argv)
    for result in results:  # each entry keeps the command and machine it was measured with
        result.update(command=command, note=args.note, machine=machine())
    path = write_results("parity_speed", {"results": _merge_with_earlier(results)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
