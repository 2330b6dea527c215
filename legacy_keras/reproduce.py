"""Reproduce the legacy's "Gradients do not exist" warning: one `fit` step of the trainer.

    python -m legacy_keras.reproduce [--model DIR] [--fixed]

Prints JSON: the variables the warning names, and the TF / Keras /
transformers versions. `--fixed` builds the heads with
`fix_local_projection_gradient=True`, leaving only the four pooler tensors.
"""

from __future__ import annotations

import argparse
import json
import sys


def reproduce(model_dir=None, fixed: bool = False, seed: int = 0) -> dict:
    """Builds the legacy trainer, runs one `fit` step, returns the report dict."""
    from legacy_keras._tf import keras, tf, transformers
    from legacy_keras.build import build_trainer, synthetic_batch
    from legacy_keras.gradients import gradient_report

    trainer = build_trainer(model_dir, seed=seed, fix_local_projection_gradient=fixed)
    batch, targets = synthetic_batch(trainer.decoder.config, batch_size=2, seq_len=7, seed=seed)
    report = gradient_report(trainer, batch, targets, mode="fit")
    return {
        "missing_gradients": list(report.missing),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "transformers": transformers.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m legacy_keras.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF RoBERTa directory (default: the embedded tiny model)")
    parser.add_argument("--fixed", action="store_true", help="apply the local-projection gradient fix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        result = reproduce(args.model, fixed=args.fixed, seed=args.seed)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
