"""What every benchmark shares: the machine description, timing, synthetic
batches, the results table and the JSON file.

Timing is wall-clock (`time.perf_counter`) around whole steps, after warm-up
steps that are not counted (they hold TF tracing, oneDNN primitive creation,
PyTorch allocator growth). Each figure is the median over the timed steps;
min and mean are kept in the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from parity.host import cpu_model
from qarac import _hf  # noqa: F401
from qarac.batch import INPUT_NAMES, TokenBatch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Decoder seeds and the targets built from the same texts.
DECODER_TARGETS = {"offset_text": "encode_decode", "conclusion_offset": "reasoning"}


def machine() -> dict[str, Any]:
    """CPU model, cores, load and library versions, recorded beside every figure."""
    cpu = cpu_model()
    info = {"nproc": os.cpu_count(), "cpu": cpu, "torch_threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
            "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def time_steps(step: Callable[[], Any], warmup: int, repeats: int,
               sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Run `step` warmup + repeats times; milliseconds per step over the timed ones."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "min_ms": min(times), "repeats": repeats, "warmup": warmup}


def random_tokens(batch: int, length: int, vocab: int, generator: torch.Generator, padded: bool = True) -> TokenBatch:
    """`<s> words </s>` rows of ids in [5, vocab), right-padded with `<pad>` (id 1).

    With `padded`, row r holds length - (r mod length/2) tokens, so about a
    quarter of the positions are padding, as in a real batch.
    """
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    ids[:, 0] = 0
    rows = torch.tensor([length - (r % max(1, length // 2)) if padded else length for r in range(batch)])
    mask = (torch.arange(length)[None, :] < rows[:, None]).long()  # (B, T)
    ids[torch.arange(batch), rows - 1] = 2
    return TokenBatch(ids.masked_fill(mask == 0, 1), mask)


def trainer_batch(batch: int, length: int, vocab: int, seed: int = 0):
    """(inputs, targets) for the trainer: every field (B, length), targets sharing their seed's mask."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {name: random_tokens(batch, length, vocab, generator) for name in INPUT_NAMES}
    targets: dict[str, Any] = {}
    for seed_name, target in DECODER_TARGETS.items():
        mask = inputs[seed_name].attention_mask
        ids = torch.randint(5, vocab, (batch, length), generator=generator).masked_fill(mask == 0, 1)
        targets[target] = TokenBatch(ids, mask)
    targets["consistency"] = torch.tensor([1.0, 0.0, -1.0] * batch)[:batch]
    return inputs, targets


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{value:.2f}" if isinstance(value, float) else str(value) for value in row])
    Console().print(table)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """bench/results/<name>.json, with the machine description."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str) + "\n")
    return path
