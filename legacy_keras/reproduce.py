"""Reproduce what the original `fit` did: the "Gradients do not exist" warning, and an epoch on its own data.

    python -m legacy_keras.reproduce [--model DIR] [--fixed] [--data DIR] [--no-epoch] [--no-graph-optimizer] [--trace-once]

Prints JSON: the variables the warning names (one `fit` step of the trainer),
the TF / Keras / transformers versions, and `epoch`: `fit` over one epoch of
the original's input pipeline (`legacy_keras.pipeline`, docs/legacy.md §1.5) on the
shipped sample corpora (or `--data`), with where and why it stopped.
`--fixed` builds the heads with `fix_local_projection_gradient=True`, leaving
only the four pooler tensors. `--no-graph-optimizer` turns TensorFlow's graph
optimizer (Grappler) off for the run: the warning is raised while `fit` traces
its step, before any optimisation, so the names it gives are the same; on
roberta-base shapes it saves about 30 s of the fit step. `--trace-once` creates the
variables `fit` would create in its first step before it, so that TensorFlow traces the
step once, not twice (`legacy_keras.gradients.gradient_report`). The harness's probe
uses both.
"""

from __future__ import annotations

import argparse
import json
import sys


def _cause_line(message: str) -> str:
    """The line of an error message that names the Python error behind it (TF wraps a
    generator's exception raised inside `fit` in an InvalidArgumentError)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    named = [line for line in lines if "RaggedBatchError" in line or "non-rectangular" in line]
    return (named or lines or [""])[0]


def fit_epoch(trainer, data_dir=None, seed: int = 0, model_dir=None) -> dict:
    """`trainer.fit` over one epoch of the original's pipeline; where it stopped and why.

    Returns:
        `batches_in_epoch`, `batches_completed` (counted by a callback),
        `stopped` (fit raised), `error` (its type and first line),
        `ragged_batches_in_epoch` (how many batches of the epoch are ragged),
        `first_ragged` (batch, field, padded_length, longest_text and
        row_length_counts, row length -> rows) and `why`, or None when no batch is ragged.
    """
    from collections import Counter

    from legacy_keras._tf import keras
    from legacy_keras.pipeline import CombinedCorpus, find_ragged_batches, legacy_tokenizer
    from qarac.data.corpora import DEFAULT_DATA_DIR

    data_dir = DEFAULT_DATA_DIR if data_dir is None else data_dir
    tokenizer = legacy_tokenizer(model_dir)  # the model directory's tokenizer.json, else the embedded one
    width = trainer.question_encoder.config.hidden_size  # 768 in the original, which ran roberta-base

    def corpus():
        return CombinedCorpus.from_directory(data_dir, tokenizer, seed=seed, qa_target_width=width)

    # The same seed replays the same shuffles: one copy to diagnose, one to feed fit.
    ragged = find_ragged_batches(corpus())
    training_data = corpus()
    completed = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: completed.append(batch))
    error = None
    try:
        trainer.fit(iter(training_data), steps_per_epoch=len(training_data), epochs=1, verbose=0,
                    callbacks=[counter])
    except Exception as caught:  # what fit raises depends on where the batch failed (peek or graph)
        error = f"{type(caught).__name__}: {_cause_line(str(caught))}"
    first = ragged[0] if ragged else None
    return {
        "batches_in_epoch": len(training_data),
        "batches_completed": len(completed),
        "stopped": error is not None,
        "error": error,
        "ragged_batches_in_epoch": len(ragged),
        "first_ragged": None if first is None else {
            "batch": first.batch, "field": first.field, "padded_length": first.padded_length,
            "longest_text": first.longest_text,
            "row_length_counts": {str(n): count for n, count in sorted(Counter(first.row_lengths).items())},
        },
        "why": first.explain() if first else None,
    }


def reproduce(model_dir=None, fixed: bool = False, seed: int = 0, data_dir=None, epoch: bool = True,
              trace_once: bool = False) -> dict:
    """Builds the legacy trainer, runs one `fit` step (and an epoch), returns the report dict."""
    from legacy_keras._tf import keras, tf, transformers
    from legacy_keras.build import build_trainer, synthetic_batch
    from legacy_keras.gradients import gradient_report

    trainer = build_trainer(model_dir, seed=seed, fix_local_projection_gradient=fixed)
    batch, targets = synthetic_batch(trainer.decoder.config, batch_size=2, seq_len=7, seed=seed)
    # the stepped weights are only put back for the epoch that follows
    report = gradient_report(trainer, batch, targets, mode="fit", trace_once=trace_once, restore=epoch)
    result = {
        "missing_gradients": list(report.missing),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "transformers": transformers.__version__,
    }
    if epoch:
        result["epoch"] = fit_epoch(trainer, data_dir, seed, model_dir)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m legacy_keras.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF RoBERTa directory (default: the embedded tiny model)")
    parser.add_argument("--fixed", action="store_true", help="apply the local-projection gradient fix")
    parser.add_argument("--seed", type=int, default=0, help="head initialisation and the data's shuffles")
    parser.add_argument("--data", default=None, help="directory of the four corpus CSVs (default: the samples)")
    parser.add_argument("--no-epoch", action="store_true", help="skip the epoch of fit on the original's data")
    parser.add_argument("--no-graph-optimizer", action="store_true",
                        help="turn Grappler off (the warning's names do not depend on it; faster)")
    parser.add_argument("--trace-once", action="store_true",
                        help="create fit's variables before it, so its step is traced once (faster)")
    args = parser.parse_args(argv)
    if args.no_graph_optimizer:
        from legacy_keras._tf import tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        result = reproduce(args.model, fixed=args.fixed, seed=args.seed, data_dir=args.data,
                           epoch=not args.no_epoch, trace_once=args.trace_once)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
