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
    modes += [mode for mode in report.gradients if mode.startswith("keras3/")]  # `--keras3` columns
    missing = {mode: {parameter_group(name) for name in report.gradients[mode]["missing"]
                      # JAX returns zeros where the other frameworks return None: marked alike
                      + (report.gradients[mode]["zero"] if mode.startswith("keras3/") else [])} for mode in modes}
    groups = sorted({g for mode in modes for g in report.gradients[mode]["group_stats"]}
                    | set().union(*missing.values()), key=group_order)
    # wider with more modes (`--keras3` adds six), so each group's bars stay apart
    figure, axes = plt.subplots(2, 1, figsize=(max(10, 0.6 * len(groups) * max(1.0, len(modes) / 4)), 8), sharex=True)
    width = 0.8 / max(len(modes), 1)
    positions = np.arange(len(groups))
    for axis, statistic in zip(axes, ("mean_abs", "max_abs")):
        values = {mode: [report.gradients[mode]["group_stats"].get(g, {}).get(statistic, np.nan) for g in groups]
                  for mode in modes}
        floor = np.nanmin([v for row in values.values() for v in row if v > 0] + [1.0]) / 10  # all-zero: off the axis
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
    axes[0].legend(ncol=min(len(modes), 5), fontsize=8)
    axes[1].set_xticks(positions + width * (len(modes) - 1) / 2)
    axes[1].set_xticklabels(groups, rotation=60, ha="right", fontsize=8)
    figure.tight_layout()
    atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)


def stage_plot_path(gradient_plot: Path) -> Path:
    """Where the stage-error plot goes beside the gradient-flow plot: `<stem>_stages.png`."""
    gradient_plot = Path(gradient_plot)
    return gradient_plot.with_name(f"{gradient_plot.stem}_stages{gradient_plot.suffix or '.png'}")


def plot_stage_errors(report: ParityReport, path: Path) -> None:
    """One panel per batch: each stage's accumulated and introduced error, in noise-floor units, log scale,
    with the verdict's bound as a line. A stage whose introduced error is far below its accumulated one
    only passes on what it inherited."""
    cases = [case for case, rows in report.stage_errors.items() if rows]
    if not cases:
        return
    length = max(len(report.stage_errors[case]) for case in cases)
    figure, axes = plt.subplots(len(cases), 1, figsize=(max(10, 0.3 * length), 4 * len(cases)), squeeze=False)
    bound = (report.verdict or {}).get("bound_in_floors")
    for axis, case in zip(axes[:, 0], cases):
        rows = report.stage_errors[case]
        positions = np.arange(len(rows))
        for key, label, marker in (("accumulated_floor_ratio", "accumulated (real forward)", "o"),
                                   ("introduced_floor_ratio", "introduced (fed the legacy's input)", "x")):
            values = [row[key] if row[key] is not None else np.nan for row in rows]
            axis.plot(positions, np.maximum(values, 1e-3), marker=marker, linestyle="-", label=label)
        if bound:
            axis.axhline(bound, color="red", linestyle="--", label=f"bound {bound:g}x floor")
        axis.set_yscale("log")
        axis.set_ylabel("error / noise floor")
        axis.set_title(f"Error per stage ({case} batch), in units of the float32 noise floor", fontsize=9)
        axis.set_xticks(positions)
        axis.set_xticklabels([row["stage"] for row in rows], rotation=75, ha="right", fontsize=6)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
