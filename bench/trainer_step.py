"""Full QARAC training step on CPU: PyTorch against the legacy Keras/TF trainer.

What: one optimizer step (forward, the four losses, backward, Nadam update)
of the whole trainer, in milliseconds per step, at two sizes:
  tiny  the embedded test model (hidden 32, 2 layers, 4 heads, intermediate 37, vocab 512);
  mid   hidden 256, 4 layers, 4 heads, intermediate 1024, vocab 512.
Batch: 8 examples per objective, every field 32 tokens, about a quarter of the
positions padding (`bench.common.trainer_batch`); the same batch on both sides.

How:
- Both sides load their bases from one checkpoint directory
  (`qarac.presets.build_base_checkpoint`): the legacy trainer with
  `legacy_keras.build.build_trainer` (compiled as the original: four losses,
  Nadam with ExponentialDecay), the PyTorch trainers with
  `QaracTrainerModel.from_base_model`. Bases hold the same numbers; the heads
  are each side's own (seeded) initialisation, which does not change the work.
- Each side runs in its own worker process (`--worker tf|pt`): TensorFlow's
  thread pools, once used, slow PyTorch in the same process by 10-50x on
  this 2-core machine, which would measure the contention, not the framework.
- Legacy TF: `model.make_train_function()` called on an iterator over the
  repeated batch: the compiled `train_step` exactly as `fit` runs it.
- PyTorch, in training mode (dropout on, as Keras' `fit`), with
  `qarac.training.optimizer.make_optimizer`/`make_scheduler` (NAdam set up as Keras' Nadam)
  and `qarac.validation.skip_value_checks()` as in a hot loop:
    pt/default          the default config, batched encoder and decoder calls;
    pt/default-per-call the default config with `batched_calls=False`;
    pt/legacy           the legacy semantics (per-call path, as TF);
    pt/default-bf16     pt/default under `torch.autocast("cpu", torch.bfloat16)`
                        (not the default: bf16 numerics; shows what the CPU's bf16 GEMMs give).
- Warm-up steps (TF tracing included) are not timed. The sides are timed in
  alternating rounds (a fresh worker per side per round) so that load from
  other processes spreads over all of them; each figure is the median over
  every timed step.
- `--profile` adds a torch.profiler table of the pt/default step at mid size.

Run: .venv/bin/python -m bench.trainer_step [--sizes tiny mid] [--profile]
Writes bench/results/trainer_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench.common import print_table, trainer_batch, write_results
from qarac import QaracConfig, QaracLoss, QaracTrainerModel
from qarac.checkpoint import read_roberta_config
from qarac.presets import build_base_checkpoint
from qarac.validation import skip_value_checks

SIZES: dict[str, dict[str, int]] = {
    "tiny": {},
    "mid": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}
EXAMPLES = 8  # per objective
LENGTH = 32  # tokens per field
GOAL = 3.0  # issue 6: PyTorch at least 3x faster than the legacy at mid size


def pt_models(model_dir: Path) -> dict[str, QaracTrainerModel]:
    """The three PyTorch trainers, in training mode, bases from `model_dir`."""
    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    configs = {"pt/default": architecture, "pt/default-per-call": architecture.replace(batched_calls=False),
               "pt/legacy": architecture.legacy()}
    return {name: QaracTrainerModel.from_base_model(model_dir, config).train() for name, config in configs.items()}


def pt_step(model: QaracTrainerModel, inputs, targets, bf16: bool = False) -> Callable[[], None]:
    """forward, loss, backward, NAdam step, zero_grad: the training loop's step."""
    from qarac.training.config import TrainConfig
    from qarac.training.optimizer import make_optimizer, make_scheduler

    train_config = TrainConfig(output_dir=tempfile.gettempdir())
    optimizer = make_optimizer(model, train_config)
    scheduler = make_scheduler(optimizer, train_config)
    loss_fn = QaracLoss(model.config)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with skip_value_checks(), autocast:
            losses = loss_fn(model(inputs), targets)
        losses.total.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tf_step(tf_model: Any, inputs, targets, hidden_size: int) -> Callable[[], None]:
    """The legacy `train_step` as `fit` runs it: the Keras train function over a data iterator."""
    from legacy_keras._tf import tf
    from parity.legacy.tensors import tf_inputs, tf_targets

    batch = (tf_inputs(inputs), tf_targets(targets, hidden_size))
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    train_function = tf_model.make_train_function()

    def step() -> None:
        logs = train_function(iterator)
        float(logs["loss"])  # wait for the step to finish

    return step


def time_each(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each timed step, per side, after `warmup` untimed steps."""
    times: dict[str, list[float]] = {}
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        times[name] = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def worker(side: str, model_dir: Path, warmup: int, repeats: int, want_profile: bool) -> dict[str, Any]:
    """One side's timings (run in its own process); prints them as one JSON line."""
    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    inputs, targets = trainer_batch(EXAMPLES, LENGTH, architecture.vocab_size)
    if side == "tf":
        from legacy_keras.build import build_trainer

        steps = {"tf/legacy-fit": tf_step(build_trainer(model_dir), inputs, targets, architecture.hidden_size)}
    else:
        models = pt_models(model_dir)
        steps = {name: pt_step(model, inputs, targets) for name, model in models.items()}
        bf16_model = QaracTrainerModel.from_base_model(model_dir, models["pt/default"].config).train()
        steps["pt/default-bf16"] = pt_step(bf16_model, inputs, targets, bf16=True)
    result: dict[str, Any] = {"times_ms": time_each(steps, warmup, repeats)}
    if want_profile:
        result["profile_pt_default"] = profile(steps["pt/default"])
    return result


def run_worker(side: str, model_dir: Path, warmup: int, repeats: int, want_profile: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.trainer_step", "--worker", side, "--model-dir", str(model_dir),
               "--warmup", str(warmup), "--repeats", str(repeats)] + (["--profile"] if want_profile else [])
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"the {side} worker failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile(step: Callable[[], None], steps: int = 5, rows: int = 25) -> str:
    """torch.profiler's table of the heaviest operators (self CPU time) over a few steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def gemm_gflops(rows: int, width: int, inner: int, repeats: int = 20) -> float:
    """Float32 matmul throughput of this machine at one of the step's GEMM shapes, in GFLOP/s (best of `repeats`)."""
    a, b = torch.randn(rows, width), torch.randn(width, inner)
    best = float("inf")
    for _ in range(repeats + 3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * rows * width * inner / best / 1e9


def roofline(model_dir: Path) -> dict[str, float]:
    """The step's model FLOPs (bench.gpu_trainer_step.step_flops) against the machine's float32 GEMM rate:
    the time the step would take if every FLOP ran at that rate."""
    from bench.gpu_trainer_step import step_flops

    model = QaracTrainerModel.from_base_model(model_dir)
    flops = step_flops(model, EXAMPLES, LENGTH)["total"]
    hidden = model.config.hidden_size
    rate = gemm_gflops(7 * EXAMPLES * LENGTH, hidden, int(model.config.base["intermediate_size"]))
    return {"step_gflop": flops / 1e9, "gemm_gflops": rate, "floor_ms": flops / 1e9 / rate * 1e3}


def bench_size(size: str, root: Path, warmup: int, repeats: int, rounds: int, want_profile: bool) -> dict[str, Any]:
    """Alternating rounds of a TF worker and a PyTorch worker on one base checkpoint."""
    model_dir = build_base_checkpoint(root / size, "tiny", 0, **SIZES[size])
    times: dict[str, list[float]] = {}
    result: dict[str, Any] = {"size": size, "base": json.loads((model_dir / "config.json").read_text()),
                              "examples_per_objective": EXAMPLES, "tokens_per_field": LENGTH}
    for round_ in range(rounds):
        for side in ("tf", "pt"):
            profiled = want_profile and side == "pt" and round_ == rounds - 1
            timed = run_worker(side, model_dir, warmup, repeats, profiled)
            for name, values in timed["times_ms"].items():
                times.setdefault(name, []).extend(values)
            if profiled:
                result["profile_pt_default"] = timed["profile_pt_default"]
                print(timed["profile_pt_default"])
    timings = {name: {"median_ms": statistics.median(t), "mean_ms": statistics.fmean(t), "min_ms": min(t),
                      "steps_timed": len(t), "warmup_per_worker": warmup} for name, t in times.items()}
    tf_ms = timings["tf/legacy-fit"]["median_ms"]
    for entry in timings.values():
        entry["speedup_vs_tf"] = tf_ms / entry["median_ms"]
    result["timings"] = timings
    result["roofline"] = roofline(model_dir)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler table of pt/default")
    parser.add_argument("--note", default="", help="recorded in the JSON, e.g. whether other jobs ran")
    parser.add_argument("--worker", choices=("tf", "pt"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model_dir, args.warmup, args.repeats, args.profile)))
        return
    with tempfile.TemporaryDirectory() as root:
        results = [bench_size(size, Path(root), args.warmup, args.repeats, args.rounds,
                              args.profile and size == "mid") for size in args.sizes]
    rows = [(f"{r['size']} {name}", t["median_ms"], t["min_ms"], f"{t['speedup_vs_tf']:.2f}x")
            for r in results for name, t in r["timings"].items()]
    rows += [(f"{r['size']} floor: {r['roofline']['step_gflop']:.1f} GFLOP at {r['roofline']['gemm_gflops']:.0f} GFLOP/s",
              r["roofline"]["floor_ms"], "", "") for r in results]
    print_table(f"QARAC training step, CPU, {EXAMPLES} examples/objective, {LENGTH} tokens/field",
                ["size / side", "median ms/step", "min ms/step", "speed-up vs TF"], rows)
    mid = next((r for r in results if r["size"] == "mid"), None)
    goal = None if mid is None else mid["timings"]["pt/default"]["speedup_vs_tf"] >= GOAL
    path = write_results("trainer_step", {"results": results, "goal_3x_at_mid": goal, "note": args.note,
                                          "command": "python -m bench.trainer_step " + " ".join(sys.argv[1:] if argv is None else argv)})
    print(f"goal (pt/default >= {GOAL}x legacy TF at mid size): {goal}; wrote {path}")


if __name__ == "__main__":
    main()
