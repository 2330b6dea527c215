"""Gradient flow: which parameters get a gradient, in which framework and mode.

The PyTorch side is computed here; the legacy side comes from
`legacy_keras.gradients` and is mapped onto PyTorch names by the weight bridge,
so every row of the report speaks of the same parameter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from parity.groups import ordered_groups, parameter_group
from qarac import QaracLoss, QaracTrainerModel
from qarac.losses import OBJECTIVES

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


def torch_gradients(model: QaracTrainerModel, inputs, targets,
                    objective: str | None = None) -> dict[str, np.ndarray | None]:
    """Gradients of the total loss (or one objective's) after one backward, keyed by parameter name."""
    model.zero_grad(set_to_none=True)
    losses = QaracLoss(model.config)(model(inputs), targets)
    loss = losses.total if objective is None else getattr(losses, objective)
    loss.backward()
    result = {name: None if p.grad is None else p.grad.detach().cpu().numpy().copy()
              for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return result


def reachability(per_objective: Mapping[str, Mapping[str, np.ndarray | None]]) -> dict[str, dict[str, bool]]:
    """{group: {objective: True if that objective's loss gives any parameter of the group a non-zero gradient}}."""
    names = next(iter(per_objective.values())).keys()
    matrix = {group: {objective: False for objective in per_objective} for group in ordered_groups(names)}
    for objective, gradients in per_objective.items():
        for name, grad in gradients.items():
            if grad is not None and np.any(grad):
                matrix[parameter_group(name)][objective] = True
    return matrix


def torch_gradients_and_reachability(model: QaracTrainerModel, inputs,
                                     targets) -> tuple[dict[str, np.ndarray | None], dict[str, dict[str, bool]]]:
    """From one forward: the total loss's gradients (as `torch_gradients`) and `reachability` per objective.

    Each objective's gradient is only asked whether it is non-zero, in place (no copy).
    """
    model.zero_grad(set_to_none=True)
    names, parameters = zip(*model.named_parameters())
    losses = QaracLoss(model.config)(model(inputs), targets)
    matrix = {group: {objective: False for objective in OBJECTIVES} for group in ordered_groups(names)}
    for objective in OBJECTIVES:
        grads = torch.autograd.grad(getattr(losses, objective), parameters, retain_graph=True, allow_unused=True)
        for name, grad in zip(names, grads):
            if grad is not None and bool(grad.any()):
                matrix[parameter_group(name)][objective] = True
        del grads
    grads = torch.autograd.grad(losses.total, parameters, allow_unused=True)
    total = {name: None if grad is None else grad.detach().cpu().numpy() for name, grad in zip(names, grads)}
    return total, matrix


def attribute_causes(flow: GradientFlow, references: list[Mapping[str, np.ndarray | None]]) -> None:
    """Fill `flow.causes`. A parameter that no reference run (PyTorch legacy
    preset, TF eager) gives a non-zero gradient is dead; one that some reference
    run does reach lost its gradient in this mode."""
    for name in flow.missing:
        reached = any(reference.get(name) is not None and np.any(reference[name]) for reference in references)
        flow.causes[name] = LOST if reached else DEAD
