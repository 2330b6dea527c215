"""Peak memory of `qarac encode --file` over N lines, by batch size (issue 13).

For each model, a QaracTrainerModel checkpoint is built from a seeded random base
(`tiny`: the embedded tiny RoBERTa; `roberta-base`: roberta-base shapes,
`qarac.presets.build_base_checkpoint(dir, "roberta-base", 0)`) with the embedded
tokenizer, and N lines "Sentence number i is here, in a file of many lines." are
written. Each measurement is one fresh process running `qarac.cli.main(["encode",
...])`; it reports its own peak resident set size (`ru_maxrss`). A batch as large
as the file is what `encode` did before it took --batch-size (one forward over
every text).

Run: .venv/bin/python -m bench.encode_memory [--models tiny roberta-base] [--lines 10000]
     [--batch-sizes 64 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, machine

MEASURE = """
import resource, sys
from qarac.cli import main
main(sys.argv[1:])
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_checkpoint(root: Path, model: str) -> Path:
    import torch

    from qarac.presets import build_base_checkpoint, tiny_model_dir
    from qarac.tokenizer import load_default_tokenizer
    from qarac.trainer import QaracTrainerModel

    base = tiny_model_dir() if model == "tiny" else build_base_checkpoint(root / "base", model, 0)
    torch.manual_seed(0)
    trainer = QaracTrainerModel.from_base_model(base)
    trainer.save_pretrained(root / "checkpoint")
    load_default_tokenizer().save_pretrained(root / "checkpoint")
    return root / "checkpoint"


def measure(checkpoint: Path, texts: Path, output: Path, batch_size: int) -> dict[str, float]:
    command = [sys.executable, "-c", MEASURE, "encode", str(checkpoint), "--file", str(texts), "--output",
               str(output), "--batch-size", str(batch_size), "--max-length", "128"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_kib = int(result.stdout.split("PEAK_RSS_KIB")[1])
    return {"batch_size": batch_size, "peak_rss_mib": peak_kib / 1024, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "roberta-base"])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 10_000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = root / "texts.txt"
        texts.write_text("".join(f"Sentence number {i} is here, in a file of many lines.\n"
                                 for i in range(args.lines)), encoding="utf-8")
        for model in args.models:
            checkpoint = make_checkpoint(root / model, model)
            for batch_size in args.batch_sizes:
                row = {"model": model, "lines": args.lines,
                       **measure(checkpoint, texts, root / "vectors.npy", batch_size)}
                print(f"{model:13s} {args.lines} lines  batch {batch_size:6d}: peak RSS "
                      f"{row['peak_rss_mib']:7.0f} MiB, {row['seconds']:6.1f} s", flush=True)
                rows.append(row)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / "encode_memory.json"
    # One entry per run; a new run of the same models replaces the old one (the models' runs
    # take very different times, so they are run apart).
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"] if path.is_file() else []
    runs = [run for run in runs if run["models"] != args.models]
    runs.append({"models": args.models, "command": " ".join(sys.argv), "machine": machine(), "results": rows})
    path.write_text(json.dumps({"runs": runs}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
