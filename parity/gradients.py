"""Gradient flow: which parameters get a gradient, in which framework and mode.

Both sides arrive as data: the port's gradients from `parity.port_gradients`, the
legacy's from `legacy_keras.gradients`, mapped onto PyTorch names by the weight
bridge, so every row of the report speaks of the same parameter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from parity.groups import ordered_groups, parameter_group

# Why a parameter misses its gradient.
DEAD = "dead parameter: no path from any loss to it, in any framework"
LOST = "lost gradient: used in the forward pass, but this execution mode drops its gradient"


@dataclass
class GradientFlow:
    """One framework/mode's gradient census, over canonical PyTorch names.

    Attributes:
        missing: parameters whose gradient is None (never reached).
        zero: parameters whose gradient exists but is all zeros.
        nonfinite: parameters whose gradient holds NaN or inf.
        causes: for each missing parameter, DEAD or LOST.
        group_stats: per parameter group, mean and max |grad| over its elements.
        expected: how many parameters the model has (None: not checked).
        not_covered: parameters of the model the census was given no entry for.
    """

    missing: list[str] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    causes: dict[str, str] = field(default_factory=dict)
    group_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    expected: int | None = None
    not_covered: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every parameter of the model was classified."""
        return self.expected is not None and not self.not_covered

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def census(gradients: Mapping[str, np.ndarray | None], expected: Iterable[str] | None = None) -> GradientFlow:
    """Classify gradients keyed by canonical PyTorch name (None: no gradient).

    Args:
        expected: every parameter name of the model; any without an entry in
            `gradients` is listed in `not_covered` (a census that skips a
            parameter cannot report it missing).
    """
    flow = GradientFlow()
    if expected is not None:
        expected = sorted(set(expected))
        flow.expected = len(expected)
        flow.not_covered = [name for name in expected if name not in gradients]
    sums: dict[str, list[float]] = {}
    for name in sorted(gradients):
        grad = gradients[name]
        group = parameter_group(name)
        if grad is None:
            flow.missing.append(name)
            continue
        # Reduced in the gradient's own dtype (no float64 copy of roberta-base's 50265 x 768 tables);
        # only the sum is accumulated in float64.
        magnitude = np.abs(np.asarray(grad))
        peak = float(magnitude.max(initial=0.0))
        if not np.isfinite(peak):
            flow.nonfinite.append(name)
            magnitude = np.abs(np.nan_to_num(np.asarray(grad)))
            peak = float(magnitude.max(initial=0.0))
        elif peak == 0.0:
            flow.zero.append(name)
        total, group_peak, count = sums.get(group, [0.0, 0.0, 0])
        sums[group] = [total + float(magnitude.sum(dtype=np.float64)), max(group_peak, peak), count + magnitude.size]
    for group in ordered_groups(gradients):
        if group in sums:
            total, peak, count = sums[group]
            flow.group_stats[group] = {"mean_abs": total / max(count, 1), "max_abs": peak}
    return flow


def reachability(per_objective: Mapping[str, Mapping[str, np.ndarray | None]]) -> dict[str, dict[str, bool]]:
    """{group: {objective: True if that objective's loss gives any parameter of the group a non-zero gradient}}."""
    names = next(iter(per_objective.values())).keys()
    matrix = {group: {objective: False for objective in per_objective} for group in ordered_groups(names)}
    for objective, gradients in per_objective.items():
        for name, grad in gradients.items():
            if grad is not None and np.any(grad):
                matrix[parameter_group(name)][objective] = True
    return matrix


def attribute_causes(flow: GradientFlow, references: list[Mapping[str, np.ndarray | None]]) -> None:
    """Fill `flow.causes`. A parameter that no reference run (PyTorch legacy
    preset, TF eager) gives a non-zero gradient is dead; one that some reference
    run does reach lost its gradient in this mode."""
    for name in flow.missing:
        reached = any(reference.get(name) is not None and np.any(reference[name]) for reference in references)
        flow.causes[name] = LOST if reached else DEAD
