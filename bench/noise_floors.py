"""Noise floors, the port's error in floor units, and the float64 check, per model size: what
`parity.tolerance.FLOOR_BOUND` and `parity.exactness.FLOAT64_BOUND` are chosen from.

What: for each model, the legacy recorded in memory (`parity.legacy.record.record_legacy`, its float64
run included) and the port judged by `parity.check.check`, the code `qarac-parity` runs. Per
case (padded, unpadded, max-length batch; the padded batch on the sharpened weight set): the
floors' range (`parity.noise`: the legacy's float32 error against its float64 run plus the port's
own-path rounding), the worst error in floor units (outputs, every stage, introduced errors), and
the float64 check's worst relative error (outputs, stages, gradients) with the smallest relative
error the float32 verdict would catch per value (FLOOR_BOUND x floor / the value's scale).
  tiny          the embedded tiny RoBERTa (hidden 32, 2 layers, vocab 512)
  mid           hidden 256, 4 layers, 8 heads, intermediate 1024, vocab 8192, random weights
  roberta-base  roberta-base shapes (hidden 768, 12 layers, vocab 50265), random weights

Run: .venv/bin/python -m bench.noise_floors [--models tiny mid roberta-base]
Writes bench/results/noise_floors.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results
from parity.exactness import FLOAT64_BOUND
from parity.tolerance import FLOOR_BOUND
from qarac.presets import build_base_checkpoint, tiny_model_dir

MID = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 1024,
       "vocab_size": 8192, "max_position_embeddings": 130}


def model_dir(model: str, root: Path) -> Path:
    if model == "tiny":
        return tiny_model_dir()
    if model == "mid":
        return build_base_checkpoint(root / model, "tiny", 0, **MID)
    return build_base_checkpoint(root / model, model, 0)


def summary(report) -> dict[str, Any]:
    """Per case: floors' range and the worst error in floor units; the float64 check's figures."""
    cases = {}
    for case, floors in report.noise_floors.items():
        values = [c for c in report.forward if c["name"].startswith(f"{case}.")]
        if case == "padded":
            values += report.layers
        ratios = [(c["floor_ratio"], c["name"]) for c in values if c["floor_ratio"] is not None]
        ratios += [(row["introduced_floor_ratio"], f"{row['stage']} (introduced)")
                   for row in report.stage_errors.get(case, [])]
        worst = max(ratios)
        cases[case] = {"floor_min": min(floors["floor"].values()), "floor_max": max(floors["floor"].values()),
                       "worst_ratio": worst[0], "worst_name": worst[1]}
    float64 = report.float64
    detectable = [v["float32_detectable"] for v in float64["values"] if v["float32_detectable"]]
    return {"cases": cases, "passed": report.passed, "failed": [k for k, ok in report.checks.items() if not ok],
            "float64_worst_value": max(v["rel_err"] for v in float64["values"]),
            "float64_worst_gradient": max(v["rel_err"] for v in float64["gradients"]),
            "float32_detectable": {"min": min(detectable), "median": statistics.median(detectable),
                                   "max": max(detectable)}}


def measure(model: str, root: Path) -> dict[str, Any]:
    from parity.check import check
    from parity.memory import release_memory
    from parity.legacy.record import record_legacy

    directory = model_dir(model, root)
    start = time.perf_counter()
    run = record_legacy(directory, batch_size=4)
    release_memory()
    report = check(run)
    return {"model": model, "seconds": time.perf_counter() - start, **summary(report)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid", "roberta-base"])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="qarac-noise-") as scratch:
        for model in args.models:
            print(f"[noise floors] {model}", file=sys.stderr, flush=True)
            rows.append(measure(model, Path(scratch)))
    table = [[row["model"], case, f"{entry['floor_min']:.2g} .. {entry['floor_max']:.2g}",
              f"{entry['worst_ratio']:.3f}x ({entry['worst_name']})"]
             for row in rows for case, entry in row["cases"].items()]
    print_table(f"Noise floors and error in floor units (bound {FLOOR_BOUND:g}x)",
                ["model", "case", "noise floors (min .. max)", "worst error / floor"], table)
    print_table(f"Float64 check (bound {FLOAT64_BOUND:g}) and what each verdict resolves",
                ["model", "float64 worst (values)", "float64 worst (gradients)",
                 "float32 verdict resolves (min / median / max relative)", "all checks"],
                [[row["model"], f"{row['float64_worst_value']:.2g}", f"{row['float64_worst_gradient']:.2g}",
                  " / ".join(f"{row['float32_detectable'][k]:.2g}" for k in ("min", "median", "max")),
                  "pass" if row["passed"] else f"FAIL {row['failed']}"] for row in rows])
    write_results("noise_floors", {"bound": FLOOR_BOUND, "float64_bound": FLOAT64_BOUND, "models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
