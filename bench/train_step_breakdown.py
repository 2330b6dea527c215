"""Where the mid-size `qarac train` step's time goes on CPU, against the float32 GEMM floor.

What (one process, the train loop's own functions as bench/train_speed.py's
`--profile` sets them up, the same model, corpus and batches, glibc's
allocator set as `qarac train` sets it on CPU):

- step: forward + loss + backward, then the optimizer step (median over the
  timed steps, after WARMUP untimed ones);
- step without dropout: the same with every dropout probability set to 0
  (`nn.Dropout.p` and the attention's `dropout_prob`): what the model's
  dropout (p = 0.1, hidden states and attention probabilities) costs;
- GEMMs in the step: every mm / addmm / bmm call of a training step timed
  around the call itself (a dispatch mode), summed; then the same calls
  replayed alone with their own shapes and strides (best of 10), summed;
- the floor: bench/train_speed.py's (each product contiguous, `torch.matmul`,
  best of 10, summed).

floor / GEMMs-in-the-step bounds the floor fraction any step of this model
can reach while its GEMMs run as they do inside it, even if nothing else cost
anything.

Run: .venv/bin/python -m bench.train_step_breakdown [--steps 10]   (prints JSON; writes nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.common import machine
from bench.train_speed import batches_of_run, gemm_floor_ms, record_products, run_config, write_corpus
from bench.trainer_step import SIZES
from qarac.presets import build_base_checkpoint

WARMUP = 3
GEMMS = ("mm", "addmm", "bmm", "baddbmm")


class GemmTimer(TorchDispatchMode):
    """Times every GEMM call around the kernel itself; keeps (name, [(shape, stride)], seconds)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, list[tuple[tuple[int, ...], tuple[int, ...]]], float]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in GEMMS:
            return func(*args, **(kwargs or {}))
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        seconds = time.perf_counter() - start
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        self.calls.append((name, [(tuple(t.shape), t.stride()) for t in tensors], seconds))
        return out


def train_parts(model_dir: Path, data_dir: Path, count: int, dropout: bool = True):
    """The model (dropout off if not `dropout`) and the train loop's step function."""
    from qarac.losses import QaracLoss
    from qarac.training.build import build_model
    from qarac.training.loss_step import make_loss_step
    from qarac.training.optimizer import make_optimizer, make_scheduler
    from qarac.training.runtime import Runtime

    config = run_config(model_dir, data_dir, "cpu", count)
    model = build_model(config, model_dir).train()
    if not dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if hasattr(module, "dropout_prob"):  # transformers' SDPA attention passes this to the kernel
                module.dropout_prob = 0.0
    optimizer, loss_fn = make_optimizer(model, config), QaracLoss(model.config)
    scheduler = make_scheduler(optimizer, config)
    loss_step = make_loss_step(model, loss_fn, config, Runtime(torch.device("cpu")))

    def step(batch, mode: TorchDispatchMode | None = None) -> tuple[float, float]:
        start = time.perf_counter()
        if mode is None:
            loss_step(batch.inputs, batch.targets).total.backward()
        else:
            with mode:
                loss_step(batch.inputs, batch.targets).total.backward()
        middle = time.perf_counter()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return middle - start, time.perf_counter() - middle

    return step


def step_times_ms(step, batches) -> dict[str, float]:
    from qarac.validation import skip_value_checks

    with skip_value_checks():
        times = [step(batch) for batch in batches]
    forward_backward, optimizer = zip(*times[WARMUP:])
    return {"step": statistics.median(f + o for f, o in times[WARMUP:]) * 1e3,
            "forward_backward": statistics.median(forward_backward) * 1e3,
            "optimizer": statistics.median(optimizer) * 1e3}


def strided(shape: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    size = sum((extent - 1) * step for extent, step in zip(shape, stride)) + 1
    return torch.randn(size).as_strided(shape, stride)


def gemms_ms(step, batches) -> dict[str, float]:
    """GEMM time inside the step (median over steps) and the same calls replayed alone."""
    from qarac.validation import skip_value_checks

    recorded = []
    with skip_value_checks():
        for index, batch in enumerate(batches):
            timer = GemmTimer()
            step(batch, timer)
            if index >= WARMUP:
                recorded.append(timer.calls)
    best: dict[tuple, float] = {}
    for name, layout, _ in recorded[0]:
        key = (name, tuple(layout))
        if key in best:
            continue
        operands = [strided(*spec) for spec in layout]
        kernel = getattr(torch.ops.aten, name)
        times = []
        for _ in range(13):
            start = time.perf_counter()
            kernel(*operands)
            times.append(time.perf_counter() - start)
        best[key] = min(times[3:])
    return {"in_step": statistics.median(sum(call[2] for call in calls) for calls in recorded) * 1e3,
            "replayed_alone_same_layout": sum(best[(n, tuple(l))] for n, l, _ in recorded[0]) * 1e3,
            "calls_per_step": len(recorded[0])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 untimed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        model_dir = build_base_checkpoint(root / "models" / "mid", "tiny", 0, **SIZES["mid"])
        data_dir = write_corpus(root / "data", rows=max((args.steps + WARMUP) * 8, 64))
        batches = batches_of_run(model_dir, data_dir, args.steps + WARMUP)
        load_before = os.getloadavg()
        result = {
            "step_ms": step_times_ms(train_parts(model_dir, data_dir, len(batches)), batches),
            "step_without_dropout_ms": step_times_ms(train_parts(model_dir, data_dir, len(batches), False), batches),
            "gemm_ms": gemms_ms(train_parts(model_dir, data_dir, len(batches)), batches),
            "floor_ms": gemm_floor_ms(record_products(model_dir, batches[WARMUP], "cpu"), 10),
        }
    result["floor_over_gemms_in_step"] = result["floor_ms"] / result["gemm_ms"]["in_step"]
    result["floor_fraction"] = result["floor_ms"] / result["step_ms"]["step"]
    result["machine"] = {**machine(), "load_average_before": load_before}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
