"""The loss history of a run: JSON and a plot, beside the checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from qarac.checkpoint import atomic_write, atomic_write_text
from qarac.objectives import OBJECTIVES

HISTORY_NAME = "loss_history.json"
PLOT_NAME = "loss_curve.png"


def write_history(output_dir: Path, history: list[dict[str, float]]) -> None:
    """The loss history as JSON and as a PNG plot (both replaced atomically)."""
    atomic_write_text(output_dir / HISTORY_NAME, json.dumps(history, indent=1))
    if history:
        atomic_write(output_dir / PLOT_NAME, lambda tmp: plot_history(history, tmp))


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = [entry["step"] for entry in history]
    figure, axes = plt.subplots(figsize=(7, 4))
    for name in (*OBJECTIVES, "total"):
        axes.plot(steps, [entry[name] for entry in history], label=name, linewidth=2 if name == "total" else 1)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
