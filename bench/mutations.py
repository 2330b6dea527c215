"""How sharp the parity harness is: every planted porting bug of `parity.mutations`,
which checks catch it, the stage they name, and the smallest planted size caught.

What: the embedded tiny RoBERTa, the harness's sample batch (4 examples). The
legacy side is run once on the clean weights and recorded
(`parity.mutations.record_legacy`: its captured forward on the plain and the
sharpened weight set, its eager gradients, the l2_normalize probe); each mutant
is then planted in the PyTorch legacy preset, one at a time (monkeypatching,
nothing edited on disk), and `parity.mutations.run_checks` runs the forward,
localisation, gradient-census and gradient-parity checks against the record,
judged in noise-floor units (`parity.noise.FLOOR_BOUND`). Mutants with a size
are planted at each size of their scan, least visible first; the table gives
the least visible size caught. `--training` also plants Nadam's epsilon
(1e-7 -> size) and runs `parity.training.training_parity` (5 steps).

Run: .venv/bin/python -m bench.mutations [--training]
Writes bench/results/mutations.json.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import asdict

from bench.common import print_table, write_results
from parity import mutations
from parity.harness import build_models
from parity.inputs import sample_batch
from qarac.presets import tiny_model_dir

NADAM_EPSILONS = (1e-6, 1e-5, 1e-4)


def nadam_epsilon_rows(directory) -> dict:
    """Nadam's epsilon changed in the port's Keras-matched optimizer: caught by training parity?"""
    import parity.training as training

    sizes = {}
    for epsilon in NADAM_EPSILONS:
        original = training.TrainConfig
        training.TrainConfig = functools.partial(original, epsilon=epsilon)
        try:
            result = training.training_parity(directory, steps=5, batch_size=4)
        finally:
            training.TrainConfig = original
        sizes[f"{epsilon:g}"] = [] if result.passed else ["training parity"]
    caught = [size for size, checks in sizes.items() if checks]
    return {"name": "Nadam epsilon (1e-7 -> size)", "caught": bool(caught), "checks": ["training parity"] if caught else [],
            "stage": None, "introducing_stage": None, "smallest_caught_size": float(caught[0]) if caught else None,
            "sizes": sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training", action="store_true", help="also plant Nadam's epsilon (runs training parity)")
    args = parser.parse_args(argv)
    directory = tiny_model_dir()
    tf_model, pt_legacy, _, weight_map = build_models(directory)
    models = mutations.Models(tf_model, pt_legacy, weight_map, sample_batch(directory, pt_legacy.config, 4))
    start = time.perf_counter()
    record = mutations.record_legacy(models)
    clean = mutations.run_checks(models, record)
    if clean.failed:
        print(f"the clean port fails {clean.failed}: the table would mean nothing", file=sys.stderr)
        return 1
    rows = []
    for name in mutations.MUTANTS:
        print(f"[mutations] {name}", file=sys.stderr, flush=True)
        rows.append(asdict(mutations.evaluate(name, models, record)))
    if args.training:
        rows.append(nadam_epsilon_rows(directory))
    seconds = time.perf_counter() - start
    print_table("Planted porting bugs (bench.mutations)", ["mutant", "caught", "checks that fail", "first stage over bound (real forward)",
                 "first stage introducing", "least visible size caught"],
                [[row["name"], "yes" if row["caught"] else "NO", ", ".join(row["checks"]) or "-", row["stage"] or "-",
                  row["introducing_stage"] or "-",
                  "-" if row["smallest_caught_size"] is None else f"{row['smallest_caught_size']:g}"] for row in rows])
    write_results("mutations", {"wall_s": seconds, "mutants": rows})
    return 0 if all(row["caught"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
