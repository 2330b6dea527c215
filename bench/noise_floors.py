"""Noise floors and the port's error in floor units, per model size: what `parity.noise.FLOOR_BOUND` is chosen from.

What: for each model, the harness's padded sample batch (4 examples) run once per
side with every stage captured (`parity.harness.forward_case`), on the model's own
weights and on the sharpened weight set (`parity.sharp`): every output's and
stage's noise floor (`parity.noise.measure_floors`: the port in float64, with eager
attention, on a permuted batch, on one thread; the legacy on a permuted batch), the
cross-framework error, and the error in floor units, accumulated (real forward) and
introduced (each stage fed the legacy's input).
  tiny          the embedded tiny RoBERTa (hidden 32, 2 layers, vocab 512)
  mid           hidden 256, 4 layers, 8 heads, intermediate 1024, vocab 8192, random weights
  roberta-base  roberta-base shapes (hidden 768, 12 layers, vocab 50265), random weights

Run: .venv/bin/python -m bench.noise_floors [--models tiny mid roberta-base]
Writes bench/results/noise_floors.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results
from parity.harness import build_models, fixed_tolerance, forward_case
from parity.inputs import sample_batch
from parity.noise import FLOOR_BOUND
from parity.sharp import sharpened
from qarac.presets import build_base_checkpoint, tiny_model_dir

MID = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 1024,
       "vocab_size": 8192, "max_position_embeddings": 130}


def model_dir(model: str, root: Path) -> Path:
    if model == "tiny":
        return tiny_model_dir()
    if model == "mid":
        return build_base_checkpoint(root / model, "tiny", 0, **MID)
    return build_base_checkpoint(root / model, model, 0)


def _summary(run) -> dict[str, Any]:
    values = run.result.outputs + run.result.stages
    worst = max(values, key=lambda c: c.floor_ratio)
    introduced = max(run.introduced, key=lambda c: c.floor_ratio)
    floors = run.floors.floor
    return {"worst_ratio": worst.floor_ratio, "worst_name": worst.name, "worst_abs_err": worst.max_abs_err,
            "worst_introduced_ratio": introduced.floor_ratio, "worst_introduced_name": introduced.name,
            "floor_min": min(floors.values()), "floor_max": max(floors.values()),
            "output_floors": {c.name: c.noise_floor for c in run.result.outputs},
            "output_ratios": {c.name: c.floor_ratio for c in run.result.outputs},
            "passed": all(c.passed for c in values)}


def _case(pt_legacy, tf_model, inputs, case: str, fallback: float):
    """One batch compared as the harness does: the legacy captured live, then `forward_case`."""
    from parity.capture import capture_keras
    from parity.noise import legacy_floor_variants

    legacy = capture_keras(tf_model, inputs)
    return forward_case(pt_legacy, legacy, legacy_floor_variants(tf_model, inputs, legacy), inputs, case, None, fallback)


def measure(model: str, root: Path) -> dict[str, Any]:
    directory = model_dir(model, root)
    tf_model, pt_legacy, _, weight_map = build_models(directory)
    batch = sample_batch(directory, pt_legacy.config, 4)
    fallback = fixed_tolerance(pt_legacy.config)
    start = time.perf_counter()
    plain = _case(pt_legacy, tf_model, batch.inputs, "padded", fallback)
    with sharpened(pt_legacy, tf_model, weight_map):
        sharp = _case(pt_legacy, tf_model, batch.inputs, "sharp", fallback)
    return {"model": model, "seconds": time.perf_counter() - start, "plain": _summary(plain), "sharp": _summary(sharp)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid", "roberta-base"])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="qarac-noise-") as scratch:
        for model in args.models:
            print(f"[noise floors] {model}", file=sys.stderr, flush=True)
            rows.append(measure(model, Path(scratch)))
    table = [[row["model"], weights, f"{row[weights]['floor_min']:.2g} .. {row[weights]['floor_max']:.2g}",
              f"{row[weights]['worst_ratio']:.2f}x ({row[weights]['worst_name']})",
              f"{row[weights]['worst_introduced_ratio']:.2f}x", "pass" if row[weights]["passed"] else "FAIL"]
             for row in rows for weights in ("plain", "sharp")]
    print_table(f"Noise floors and error in floor units (bound {FLOOR_BOUND:g}x)",
                ["model", "weights", "noise floors (min .. max)", "worst error / floor (accumulated)",
                 "worst introduced / floor", "verdict"], table)
    write_results("noise_floors", {"bound": FLOOR_BOUND, "models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
