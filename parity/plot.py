"""The gradient-flow plot: mean and max |grad| per parameter group, every framework and mode."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from parity.groups import group_order, parameter_group  # noqa: E402
from parity.harness import ParityReport  # noqa: E402
from qarac.checkpoint import atomic_write  # noqa: E402

MODES = ("tf/eager", "tf/graph", "pt/legacy", "pt/default")


def plot_gradient_flow(report: ParityReport, path: Path) -> None:
    """Two panels (mean, max |grad|) of grouped bars on a log scale.

    A group where some parameter got no gradient in a mode carries an x in
    that mode's colour at the bottom of the axis.
    """
    modes = [mode for mode in MODES if mode in report.gradients]
    missing = {mode: {parameter_group(name) for name in report.gradients[mode]["missing"]} for mode in modes}
    groups = sorted({g for mode in modes for g in report.gradients[mode]["group_stats"]}
                    | set().union(*missing.values()), key=group_order)
    figure, axes = plt.subplots(2, 1, figsize=(max(10, 0.6 * len(groups)), 8), sharex=True)
    width = 0.8 / max(len(modes), 1)
    positions = np.arange(len(groups))
    for axis, statistic in zip(axes, ("mean_abs", "max_abs")):
        values = {mode: [report.gradients[mode]["group_stats"].get(g, {}).get(statistic, np.nan) for g in groups]
                  for mode in modes}
        floor = np.nanmin([v for row in values.values() for v in row] + [1.0]) / 10
        for index, mode in enumerate(modes):
            axis.bar(positions + index * width, values[mode], width, label=mode, color=f"C{index}")
            for position, group in zip(positions, groups):
                if group in missing[mode]:
                    axis.plot(position + index * width, floor, marker="x", color=f"C{index}", markersize=10,
                              markeredgewidth=2, clip_on=False)
        axis.set_yscale("log")
        axis.set_ylim(bottom=floor)
        axis.set_ylabel(f"{statistic.replace('_', ' ')} |grad|")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_title("Gradient flow per parameter group (x: a parameter of the group got no gradient in that mode)",
                      fontsize=9)
    axes[0].legend(ncol=len(modes), fontsize=8)
    axes[1].set_xticks(positions + width * (len(modes) - 1) / 2)
    axes[1].set_xticklabels(groups, rotation=60, ha="right", fontsize=8)
    figure.tight_layout()
    atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
