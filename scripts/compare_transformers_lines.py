"""Does the port compute the same on transformers 4.57 and 5.x? Run it in each venv, then compare.

    .venv/bin/python scripts/compare_transformers_lines.py dump /tmp/t457.npz
    .venv-modern/bin/python scripts/compare_transformers_lines.py dump /tmp/t5.npz
    .venv/bin/python scripts/compare_transformers_lines.py compare /tmp/t457.npz /tmp/t5.npz

`dump` builds the trainer from the embedded tiny RoBERTa (bit-identical on both lines),
heads seeded, in the legacy and the default preset, runs one eval-mode forward on a
padded synthetic batch and saves every output, the total loss and every parameter
gradient of the total loss. `compare` prints the largest difference of each array.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import trainer_batch  # noqa: E402
from qarac import QaracLoss, QaracTrainerModel  # noqa: E402
from qarac.base import TRANSFORMERS_VERSION, config_for_base  # noqa: E402
from qarac.presets import tiny_model_dir  # noqa: E402


def dump(path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    model_dir = tiny_model_dir()
    for preset in ("legacy", "fixed"):
        config = getattr(config_for_base(model_dir, None), preset)()
        torch.manual_seed(0)
        model = QaracTrainerModel.from_base_model(model_dir, config).eval()
        inputs, targets = trainer_batch(4, 11, config.vocab_size)
        outputs = model(inputs)
        total = QaracLoss(config)(outputs, targets).total
        total.backward()
        for name, value in outputs.as_dict().items():
            arrays[f"{preset}/output/{name}"] = value.detach().numpy()
        arrays[f"{preset}/loss/total"] = total.detach().numpy()
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                arrays[f"{preset}/grad/{name}"] = parameter.grad.numpy()
    np.savez(path, **arrays)
    print(f"transformers {TRANSFORMERS_VERSION}: {len(arrays)} arrays written to {path}")


def compare(first: Path, second: Path) -> int:
    a, b = np.load(first), np.load(second)
    if set(a.files) != set(b.files):
        print(f"different arrays: only in {first}: {sorted(set(a.files) - set(b.files))}; "
              f"only in {second}: {sorted(set(b.files) - set(a.files))}")
        return 1
    worst = {}
    for name in sorted(a.files):
        group = "/".join(name.split("/")[:2])
        difference = float(np.abs(a[name].astype(np.float64) - b[name]).max())
        worst[group] = max(worst.get(group, 0.0), difference)
    for group, difference in worst.items():
        print(f"{group:20s} max |difference| {difference:.3g}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dump").add_argument("path", type=Path)
    compare_parser = commands.add_parser("compare")
    compare_parser.add_argument("first", type=Path)
    compare_parser.add_argument("second", type=Path)
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.path)
        return 0
    return compare(args.first, args.second)


if __name__ == "__main__":
    sys.exit(main())
