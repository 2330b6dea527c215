"""Global attention pooling head, forward + backward: PyTorch against the legacy Keras layer.

What: one forward and backward pass of the head alone, on random hidden
states X (B, T, H), the loss being the sum of the pooled vectors; the
gradient is taken with respect to X and both projections. Milliseconds per
pass at a few sizes (B, T, H).

Sides (the same function, docs/legacy.md §1.1, no mask as the legacy encoder calls it):
  pt                 `qarac.GlobalAttentionPoolingHead` with the legacy preset, eager;
  tf/graph           the legacy layer inside `tf.function` with a GradientTape, as `fit` runs it;
                     the local projection gets no gradient there (the legacy bug), so it does less work;
  tf/graph-fixed     the same with `fix_local_projection_gradient=True` (all gradients flow);
  tf/eager           the legacy layer, eager, with a GradientTape.

How: PyTorch is timed in this process; TensorFlow in a worker process
(`--worker`), since TF's thread pools slow PyTorch sharing a process with it.
Warm-up passes (tracing included) are not timed; median of the timed passes.

Run: .venv/bin/python -m bench.pooling_head
Writes bench/results/pooling_head.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.common import print_table, time_steps, write_results

SIZES = [(8, 32, 32), (8, 32, 256), (16, 128, 768)]
WARMUP = 3
REPEATS = 20


def states(size: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(0).normal(size=size).astype(np.float32)


def pt_pass(size: tuple[int, int, int]) -> Callable[[], None]:
    from qarac import GlobalAttentionPoolingHead, QaracConfig
    from qarac.presets import TINY

    config = QaracConfig(base={**TINY, "hidden_size": size[2]}).legacy()
    head = GlobalAttentionPoolingHead(config)
    hidden = torch.from_numpy(states(size)).requires_grad_(True)

    def step() -> None:
        head(hidden).sum().backward()
        head.zero_grad(set_to_none=True)
        hidden.grad = None

    return step


def tf_passes(size: tuple[int, int, int]) -> dict[str, Callable[[], None]]:
    from legacy_keras._tf import tf
    from legacy_keras.layers import GlobalAttentionPoolingHead

    hidden = tf.constant(states(size))
    passes = {}
    for name, fixed, graph in (("tf/graph", False, True), ("tf/graph-fixed", True, True), ("tf/eager", False, False)):
        head = GlobalAttentionPoolingHead(fix_local_projection_gradient=fixed)
        head(hidden)  # build the weights

        def forward_backward(x, head=head):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(head(x))
            return tape.gradient(loss, [x, *head.trainable_variables])

        function = tf.function(forward_backward) if graph else forward_backward
        passes[name] = lambda function=function: [None if g is None else g.numpy() for g in function(hidden)]
    return passes


def worker() -> dict[str, dict[str, Any]]:
    """TF timings for every size (run in its own process)."""
    return {str(size): {name: time_steps(step, WARMUP, REPEATS) for name, step in tf_passes(size).items()}
            for size in SIZES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--note", default="", help="recorded in the JSON, e.g. whether other jobs ran")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker()))
        return
    timings = {str(size): {"pt": time_steps(pt_pass(size), WARMUP, REPEATS)} for size in SIZES}
    done = subprocess.run([sys.executable, "-m", "bench.pooling_head", "--worker"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"the TF worker failed (exit {done.returncode}): {done.stderr[-3000:]}")
    for size, sides in json.loads(done.stdout.strip().splitlines()[-1]).items():
        timings[size].update(sides)
    rows = []
    for size, sides in timings.items():
        pt_ms = sides["pt"]["median_ms"]
        for name, entry in sides.items():
            entry["pt_speedup"] = entry["median_ms"] / pt_ms
            rows.append((f"{size} {name}", entry["median_ms"], f"{entry['pt_speedup']:.2f}x"))
    print_table("Pooling head forward + backward, CPU", ["(B, T, H) side", "median ms", "PyTorch speed-up"], rows)
    path = write_results("pooling_head", {"timings": timings, "note": args.note,
                                          "command": "python -m bench.pooling_head " + " ".join(sys.argv[1:] if argv is None else argv)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
