"""The `qarac train` command itself: ms per step, steps/s, tokens/s, peak memory,
MFU (CUDA) or the float32 GEMM floor fraction (CPU).

What: `python -m qarac train` run as a user runs it (a fresh process, the
embedded tokenizer, a corpus directory, `--max-steps`), at the sizes of
bench/trainer_step.py (`mid`: hidden 256, 4 layers, 4 heads, intermediate 1024,
vocab 512; `tiny`: the embedded test model), batch 8 per objective, fields of
17-32 tokens cut at `--max-length 32` (about a quarter of each batch padding, as
section 1 of bench/README.md).

How:
- The corpus: four CSVs written by the bench, each field made of sample-corpus
  sentences joined until it has 17-32 tokens (drawn per row), as many rows as
  the steps need.
- Step times: the command's own progress bar (tqdm, on stderr, redrawn after
  every step since a step takes longer than its 0.1 s refresh) read as it is
  written; ms/step = (time at step W+S - time at step W) / S, so start-up,
  compilation and the first W (warm-up) steps are outside it; checkpoints are
  off until the end (`--checkpoint-every 0`). Every field is padded to 32 tokens
  (`--data-option padding=corpus_fit`), so every step has one shape, as in
  bench/trainer_step.py, and `--compile` compiles once.
- Tokens/s: every token position (padding included) of the timed batches, which
  the bench rebuilds with `qarac.training.build.epoch_batches` from the same settings.
- Peak memory: the process's peak resident set (`wait4`), and on CUDA
  `torch.cuda.max_memory_allocated` printed by the process at exit.
- The float32 GEMM floor (CPU): every matrix product one training step runs
  (forward and backward, recorded with a `TorchDispatchMode` over one step of
  the same model and a batch of the run; attention's fused kernels counted as
  their two forward and four backward batched products), each timed alone with
  `torch.matmul` at its shape (best of `--gemm-repeats`), summed.
  floor_fraction = floor ms / step ms: the share of the step that the matrix
  products would take at this machine's float32 speed; 1.0 means nothing else
  costs anything.
- MFU (CUDA): the recorded products' FLOPs per step / step time / the GPU's
  dense bf16 peak (H100 SXM: 989 TFLOP/s).
- `--profile`: a torch.profiler table of the same step in-process (the train
  loop's functions: `make_loss_step`, backward, `make_optimizer`'s step).

Run: .venv/bin/python -m bench.train_speed [--sizes mid] [--variants eager compile]
Appends to bench/results/train_speed.json (one entry per size and variant).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS_DIR, machine, print_table
from bench.trainer_step import SIZES
from qarac.data.corpora import DEFAULT_DATA_DIR
from qarac.presets import build_base_checkpoint

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = 8
# Every field padded to its corpus length (32 here): the fixed shapes of bench/trainer_step.py,
# which `--compile` needs (batches whose shapes vary are compiled again and again: measured
# 10.7 s per step over 20 steps at mid size with per-batch padding).
FIXED_SHAPES = "padding=corpus_fit"
MAX_LENGTH = 32
SHORTEST = 17
# Extra command-line flags per variant.
VARIANTS: dict[str, list[str]] = {
    "eager": [],
    "eager-single": ["--optimizer", "single"],  # the per-parameter NAdam loop `qarac train` used before
    "compile": ["--compile"],
}
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
# Runs `qarac` as `python -m qarac` does, then reports the CUDA allocator's peak on stderr.
LAUNCHER = ("import atexit, runpy, sys, torch\n"
            "def peak():\n"
            "    if torch.cuda.is_available() and torch.cuda.is_initialized():\n"
            "        print(f'\\nCUDA_PEAK_BYTES {torch.cuda.max_memory_allocated()}', file=sys.stderr)\n"
            "atexit.register(peak)\n"
            "sys.argv = ['qarac', *sys.argv[1:]]\n"
            "runpy.run_module('qarac', run_name='__main__')\n")


# --- the corpus ------------------------------------------------------------------------

def write_corpus(directory: Path, rows: int, seed: int = 0) -> Path:
    """Four CSVs of `rows` rows whose text fields have 17-32 tokens each (before truncation)."""
    from qarac.tokenizer import load_default_tokenizer

    tokenizer = load_default_tokenizer()
    with (DEFAULT_DATA_DIR / "all_text.csv").open(encoding="utf-8", newline="") as handle:
        sentences = [row[0] for row in list(csv.reader(handle))[1:]]
    rng = random.Random(seed)

    def text() -> str:
        target, words = rng.randint(SHORTEST, MAX_LENGTH), []
        while len(tokenizer(" ".join(words))["input_ids"]) < target:
            words.append(rng.choice(sentences))
        return " ".join(words)

    directory.mkdir(parents=True, exist_ok=True)
    layouts = {"all_text": ["all_text"], "question_answering": ["question", "answer"],
               "reasoning": ["proposition0", "proposition1", "conclusion"],
               "consistency": ["statement0", "statement1", "consistency"]}
    for name, columns in layouts.items():
        with (directory / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for index in range(rows):
                writer.writerow([(-1, 0, 1)[index % 3] if column == "consistency" else text() for column in columns])
    return directory


# --- running the command ------------------------------------------------------------------

def train_command(model_dir: Path, data_dir: Path, output: Path, steps: int, device: str,
                  flags: list[str]) -> list[str]:
    return ["train", "--model", str(model_dir), "--data", str(data_dir), "--output", str(output),
            "--batch-size", str(EXAMPLES), "--max-length", str(MAX_LENGTH), "--max-steps", str(steps),
            "--checkpoint-every", "0", "--device", device, "--data-option", FIXED_SHAPES, *flags]


def run_timed(arguments: list[str]) -> dict[str, Any]:
    """Run `qarac ARGUMENTS`; the wall time at which the progress bar first showed each step."""
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, *arguments], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    start, seen, tail = time.perf_counter(), {}, []
    pattern = re.compile(rb"(\d+)/(\d+) \[")

    def read_bar() -> None:
        carry = b""  # the end of the previous chunk: a bar line may be split between two reads
        while chunk := process.stderr.read1(4096):
            now = time.perf_counter() - start
            tail.append(chunk)
            for match in pattern.finditer(carry + chunk):
                seen.setdefault(int(match.group(1)), now)
            carry = chunk[-64:]

    reader = threading.Thread(target=read_bar, daemon=True)
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    reader.join(timeout=10)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = b"".join(tail).decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"qarac train failed ({process.returncode}): {stderr[-2000:]}")
    cuda_peak = re.search(r"CUDA_PEAK_BYTES (\d+)", stderr)
    return {"step_times_s": seen, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
            "cuda_peak_mib": int(cuda_peak.group(1)) / 2 ** 20 if cuda_peak else None}


# --- what the steps hold --------------------------------------------------------------------

def run_config(model_dir: Path, data_dir: Path, device: str, steps: int, variant: str = "eager"):
    from qarac.training.config import TrainConfig

    optimizer = "single" if variant == "eager-single" else "foreach"
    return TrainConfig(output_dir=tempfile.gettempdir(), model_dir=str(model_dir), data_dir=str(data_dir),
                       batch_size=EXAMPLES, max_length=MAX_LENGTH, max_steps=steps, device=device,
                       data_options=(FIXED_SHAPES,), compile=variant == "compile", optimizer=optimizer)


def batches_of_run(model_dir: Path, data_dir: Path, count: int) -> list[Any]:
    """The first `count` batches `qarac train` takes with these settings (one process)."""
    from qarac.training.build import build_dataset, build_model, epoch_batches, load_tokenizer_for
    from qarac.training.runtime import Runtime

    config = run_config(model_dir, data_dir, "cpu", count)
    model = build_model(config, model_dir)
    dataset = build_dataset(config, load_tokenizer_for(config, model_dir), model.config)
    runtime, found, epoch = Runtime(torch.device("cpu")), [], 0
    while len(found) < count:
        found += list(epoch_batches(dataset, config, runtime, epoch, 0))[:count - len(found)]
        epoch += 1
    return found


def batch_tokens(batch) -> int:
    return sum(tokens.input_ids.numel() for tokens in batch.inputs.values())


def sdpa_products(shapes: list[list[int]], backward: bool) -> list[tuple[int, int, int, int]]:
    """Attention's fused kernel as batched products (batch, m, k, n): Q K^T and P V forward;
    dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q backward."""
    query, key = shapes[0], shapes[1]
    batch, length, keys, width = query[0] * query[1], query[2], key[2], query[3]
    if not backward:
        return [(batch, length, width, keys), (batch, length, keys, width)]
    return [(batch, keys, length, width), (batch, length, width, keys),
            (batch, length, keys, width), (batch, keys, length, width)]


def record_products(model_dir: Path, batch, device: str) -> list[tuple[int, int, int, int]]:
    """(batch, m, k, n) of every matrix product of one training step (forward, loss, backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from qarac.losses import QaracLoss
    from qarac.training.build import build_model
    from qarac.validation import skip_value_checks

    aten = torch.ops.aten
    products: list[tuple[int, int, int, int]] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            packet = func.overloadpacket
            shape = lambda t: list(t.shape)  # noqa: E731
            if packet is aten.mm:
                (m, k), n = shape(args[0]), shape(args[1])[1]
                products.append((1, m, k, n))
            elif packet is aten.addmm:
                (m, k), n = shape(args[1]), shape(args[2])[1]
                products.append((1, m, k, n))
            elif packet in (aten.bmm, aten.baddbmm):
                first, second = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
                b, m, k = shape(first)
                products.append((b, m, k, shape(second)[2]))
            elif "scaled_dot_product" in packet.__name__:
                backward = "backward" in packet.__name__
                tensors = [shape(a) for a in args if isinstance(a, torch.Tensor) and a.dim() == 4]
                query, key = (tensors[1], tensors[2]) if backward else (tensors[0], tensors[1])
                products.extend(sdpa_products([query, key], backward))
            return func(*args, **(kwargs or {}))

    config = run_config(model_dir, Path("."), device, 1)
    model = build_model(config, model_dir).to(device).train()
    batch = batch.to(torch.device(device))
    with skip_value_checks(), Recorder():
        QaracLoss(model.config)(model(batch.inputs), batch.targets).total.backward()
    return products


def gemm_floor_ms(products: list[tuple[int, int, int, int]], repeats: int) -> float:
    """Sum over the products of each one's best float32 `torch.matmul` time at its shape (CPU)."""
    best_ms: dict[tuple[int, int, int, int], float] = {}
    for shape in sorted(set(products)):
        b, m, k, n = shape
        left = torch.randn(b, m, k) if b > 1 else torch.randn(m, k)
        right = torch.randn(b, k, n) if b > 1 else torch.randn(k, n)
        times = []
        for _ in range(repeats + 3):
            start = time.perf_counter()
            torch.matmul(left, right)
            times.append(time.perf_counter() - start)
        best_ms[shape] = min(times[3:]) * 1e3
    return sum(best_ms[shape] for shape in products)


def profile_step(model_dir: Path, data_dir: Path, batches: list[Any], variant: str, rows: int = 25) -> str:
    """torch.profiler's operator table of the train loop's own step functions (as `variant` sets
    them up) over a few batches, after two unprofiled ones (compilation)."""
    from torch.profiler import ProfilerActivity, profile

    from qarac.losses import QaracLoss
    from qarac.training.build import build_model
    from qarac.training.loss_step import make_loss_step
    from qarac.training.optimizer import make_optimizer, make_scheduler
    from qarac.training.runtime import Runtime
    from qarac.validation import skip_value_checks

    config = run_config(model_dir, data_dir, "cpu", len(batches), variant)
    model = build_model(config, model_dir).train()
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    loss_step = make_loss_step(model, QaracLoss(model.config), config, Runtime(torch.device("cpu")))

    def step(batch) -> None:
        losses = loss_step(batch.inputs, batch.targets)
        losses.total.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    with skip_value_checks():
        for batch in batches[:2]:
            step(batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[2:]:
                step(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# --- one measurement -------------------------------------------------------------------------

def measure(size: str, variant: str, root: Path, device: str, warmup: int, steps: int, args) -> dict[str, Any]:
    model_dir = build_base_checkpoint(root / "models" / size, "tiny", 0, **SIZES[size])
    total = warmup + steps
    data_dir = write_corpus(root / "data", rows=max(total * EXAMPLES, 64))
    output = root / "runs" / f"{size}-{variant}"
    arguments = train_command(model_dir, data_dir, output, total, device, VARIANTS[variant] + ["--overwrite"])
    timed = run_timed(arguments)
    seen = timed["step_times_s"]
    # The bar is redrawn at most every 0.1 s: fast steps are seen in strides. Time from the first
    # step shown at or after the warm-up to the last one (the bar's final redraw shows `total`).
    shown = sorted(step for step in seen if step >= warmup)
    if len(shown) < 2 or shown[-1] != total:
        raise RuntimeError(f"the progress bar showed steps {sorted(seen)}; expected {warmup}..{total}")
    first = shown[0]
    seconds = (seen[total] - seen[first]) / (total - first)
    batches = batches_of_run(model_dir, data_dir, total)
    tokens = sum(batch_tokens(batch) for batch in batches[first:total]) / (total - first)
    products = record_products(model_dir, batches[warmup], device)
    flops = sum(2.0 * b * m * k * n for b, m, k, n in products)
    entry: dict[str, Any] = {
        "size": size, "variant": variant, "device": device,
        "command": "qarac " + " ".join(arguments).replace(str(root), "$TMP"),
        "bench_command": "python -m bench.train_speed " + " ".join(args.argv),
        "ms_per_step": seconds * 1e3, "steps_per_s": 1 / seconds, "tokens_per_s": tokens / seconds,
        "examples_per_objective": EXAMPLES, "tokens_per_step": tokens, "warmup_steps": first, "timed_steps": total - first,
        "time_to_step_1_s": seen.get(1), "wall_s": timed["wall_s"], "peak_rss_mib": timed["peak_rss_mib"],
        "cuda_peak_mib": timed["cuda_peak_mib"], "gemm_gflop_per_step": flops / 1e9,
        "cpu": machine()["cpu"], "machine": machine(),
    }
    if device == "cpu":
        floor = gemm_floor_ms(products, args.gemm_repeats)
        entry.update(floor_ms=floor, floor_fraction=floor / entry["ms_per_step"], mfu=None)
    else:
        name = torch.cuda.get_device_name()
        peak = next((value for key, value in PEAK_FLOPS.items() if key in name), None)
        entry.update(mfu=None if peak is None else flops / seconds / peak, gpu=name, floor_fraction=None)
    if args.profile and device == "cpu":
        entry["profile"] = profile_step(model_dir, data_dir, batches[:7], variant)
        print(entry["profile"])
    return entry


def append_results(entries: list[dict[str, Any]], note: str) -> Path:
    path = RESULTS_DIR / "train_speed.json"
    existing = json.loads(path.read_text()) if path.is_file() else {"entries": []}
    for entry in entries:
        entry["note"] = note
    existing["entries"].extend(entries)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2, default=str) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["mid"], choices=list(SIZES))
    parser.add_argument("--variants", nargs="+", default=["eager", "compile"], choices=list(VARIANTS))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--gemm-repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler table of each variant's step (CPU)")
    parser.add_argument("--note", default="", help="recorded with each entry, e.g. the machine's load")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    entries = []
    with tempfile.TemporaryDirectory() as root:
        for size in args.sizes:
            for variant in args.variants:
                entries.append(measure(size, variant, Path(root), args.device, args.warmup, args.steps, args))
    rows = [(f"{e['size']} {e['variant']}", e["ms_per_step"], e["tokens_per_s"], e["peak_rss_mib"],
             e["floor_ms"] if e.get("floor_ms") else "-",
             f"{e['floor_fraction']:.2f}" if e.get("floor_fraction") else f"{e['mfu']}") for e in entries]
    print_table(f"qarac train, {args.device}, {EXAMPLES} examples/objective, fields of {SHORTEST}-{MAX_LENGTH} tokens",
                ["size variant", "ms/step", "tokens/s", "peak RSS MiB", "GEMM floor ms", "floor fraction / MFU"], rows)
    if not args.no_write:
        print(f"appended to {append_results(entries, args.note)}")


if __name__ == "__main__":
    main()
