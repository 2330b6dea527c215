"""The port's gradients (the port runner's part of `parity.gradients`, which classifies them):
the total loss's and each objective's, from one forward of a PyTorch `QaracTrainerModel`."""

from __future__ import annotations

import numpy as np
import torch

from parity.groups import ordered_groups, parameter_group
from qarac import QaracLoss, QaracTrainerModel
from qarac.objectives import OBJECTIVES

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


def torch_gradients_and_reachability(model: QaracTrainerModel, inputs,
                                     targets) -> tuple[dict[str, np.ndarray | None], dict[str, dict[str, bool]]]:
    """From one forward: the total loss's gradients (as `torch_gradients`) and, per objective, whether it
    reaches each parameter group (`parity.gradients.reachability`'s matrix).

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
