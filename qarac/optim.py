"""Keras' Nadam as one multi-tensor step.

`KerasNadam` is `torch.optim.NAdam` with Keras' settings (`momentum_decay=1.0`,
Keras' epsilon, no weight decay; docs/optimizer.md) whose step updates every
parameter with a handful of `torch._foreach_*` calls instead of a Python loop of
about ten operations per parameter. Its state (`step`, `mu_product`, `exp_avg`,
`exp_avg_sq` per parameter) and its `state_dict` are NAdam's, so checkpoints
written by either load in the other.

Implementations (`implementation=`):

    "single"    torch's own per-parameter loop (`foreach=False`): the reference.
    "foreach"   the same operations, in the same order, as `_foreach_*` calls.
                On CPU every `_foreach_*` op runs the per-tensor kernel the loop
                runs, so the result is bit for bit the reference's
                (tests/test_optim.py). On CUDA the fused multi-tensor kernels
                compute the same formulas but are not checked bit for bit here.
    "compiled"  the update of "foreach" under `torch.compile` (one fused loop per
                parameter group on CPU, Triton kernels on CUDA), its per-step
                scalars passed in as tensors so that it compiles once. The
                compiler may contract a * b + c into one rounding and reorder
                the lerp, so it is not bit-exact: MAX_COMPILED_ULPS bounds it.

The per-step scalars (mu_t, mu_{t+1}, the bias corrections and the two
step sizes) are computed in Python float64 from each parameter's own `step` and
`mu_product`, exactly as the reference computes them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

IMPLEMENTATIONS = ("single", "foreach", "compiled")
# Largest difference between "compiled" and "single" after 50 steps, in ulps of the
# parameter's largest magnitude: 0.1-0.5 measured on CPU (tests/test_optim.py), 8x margin.
MAX_COMPILED_ULPS = 4


class KerasNadam(torch.optim.NAdam):
    """NAdam set to compute Keras' (tf-keras 2.21) Nadam update, stepped by `implementation`.

    Args:
        params: the parameters (or parameter groups) to optimise.
        lr, betas, eps: Keras' `learning_rate`, (`beta_1`, `beta_2`), `epsilon`.
        implementation: one of IMPLEMENTATIONS (see the module docstring).
    """

    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float], eps: float,
                 implementation: str = "foreach"):
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"optimizer implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=0.0, momentum_decay=1.0, foreach=False)
        self.implementation = implementation
        self._compiled_update: Callable | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        if self.implementation == "single":
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, mu_products, steps = [], [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, mu_products, steps)
            if params:
                self._step_group(group, params, grads, exp_avgs, exp_avg_sqs, mu_products, steps)
        return loss

    def _step_group(self, group: dict, params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                    exp_avg_sqs: list[Tensor], mu_products: list[Tensor], steps: list[Tensor]) -> None:
        if any(torch.is_complex(p) for p in params):
            raise ValueError("KerasNadam takes real parameters only")
        beta1, beta2 = group["betas"]
        scalars = advance_scalars(steps, mu_products, beta1, beta2, float(group["lr"]))
        if self.implementation == "compiled" and scalars.uniform:
            if self._compiled_update is None:
                self._compiled_update = torch.compile(tensor_scalar_update, fullgraph=True)
            device, dtype = params[0].device, params[0].dtype
            as_tensor = lambda values: torch.tensor(values, dtype=dtype, device=device)  # noqa: E731
            self._compiled_update(params, grads, exp_avgs, exp_avg_sqs, as_tensor(scalars.bias_correction2[0]),
                                  as_tensor(scalars.grad_step[0]), as_tensor(scalars.average_step[0]),
                                  1 - beta1, beta2, group["eps"])
        else:
            # "foreach", and "compiled" in the rare group whose parameters started at different steps.
            foreach_update(params, grads, exp_avgs, exp_avg_sqs, scalars.bias_correction2, scalars.grad_step,
                           scalars.average_step, 1 - beta1, beta2, group["eps"])


class StepScalars:
    """Per-parameter Python floats of one step: the bias correction of v and the two step sizes."""

    def __init__(self, bias_correction2: list[float], grad_step: list[float], average_step: list[float]):
        self.bias_correction2, self.grad_step, self.average_step = bias_correction2, grad_step, average_step

    @property
    def uniform(self) -> bool:
        """Whether every parameter takes the same scalars (all started at the same step)."""
        return all(len(set(values)) == 1 for values in (self.bias_correction2, self.grad_step, self.average_step))


def advance_scalars(steps: Sequence[Tensor], mu_products: Sequence[Tensor], beta1: float, beta2: float,
                    lr: float) -> StepScalars:
    """Count the step and fold mu_t into each `mu_product` (in place, float32 as the reference),
    then the scalars `_single_tensor_nadam` computes, in its order and precision."""
    torch._foreach_add_(list(steps), 1.0)
    counts = [float(step) for step in steps]
    mus = [beta1 * (1.0 - 0.5 * (0.96 ** (t * 1.0))) for t in counts]  # momentum_decay = 1.0
    mu_nexts = [beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * 1.0))) for t in counts]
    torch._foreach_mul_(list(mu_products), mus)
    products = [float(product) for product in mu_products]
    return StepScalars(
        bias_correction2=[1 - beta2 ** t for t in counts],
        grad_step=[-lr * (1.0 - mu) / (1.0 - product) for mu, product in zip(mus, products)],
        average_step=[(-lr * mu_next) / (1.0 - product * mu_next) for mu_next, product in zip(mu_nexts, products)],
    )


def update_moments(grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                   bias_correction2: list[float] | Tensor, one_minus_beta1: float, beta2: float,
                   eps: float) -> list[Tensor]:
    """m <- lerp(m, g, 1 - beta1) and v <- beta2 v + (1 - beta2) g^2 in place, over every parameter
    at once; returns the denominators sqrt(v / bc2) + eps (one per parameter, new tensors)."""
    torch._foreach_lerp_(exp_avgs, grads, one_minus_beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denominators = torch._foreach_div(exp_avg_sqs, bias_correction2)
    torch._foreach_sqrt_(denominators)
    torch._foreach_add_(denominators, eps)
    return denominators


def foreach_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                   bias_correction2: list[float], grad_step: list[float], average_step: list[float],
                   one_minus_beta1: float, beta2: float, eps: float) -> None:
    """`_single_tensor_nadam`'s tensor operations, each over every parameter at once.

    m <- lerp(m, g, 1 - beta1); v <- beta2 v + (1 - beta2) g^2; d = sqrt(v / bc2) + eps;
    p += grad_step * g / d; p += average_step * m / d. Lists are per parameter.
    """
    denominators = update_moments(grads, exp_avgs, exp_avg_sqs, bias_correction2, one_minus_beta1, beta2, eps)
    torch._foreach_addcdiv_(params, grads, denominators, grad_step)
    torch._foreach_addcdiv_(params, exp_avgs, denominators, average_step)


def tensor_scalar_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                         exp_avg_sqs: list[Tensor], bias_correction2: Tensor, grad_step: Tensor,
                         average_step: Tensor, one_minus_beta1: float, beta2: float, eps: float) -> None:
    """`foreach_update` with the step-dependent scalars as 0-d tensors shared by every parameter,
    so that a compiled version is traced once and reused at every step."""
    denominators = update_moments(grads, exp_avgs, exp_avg_sqs, bias_correction2, one_minus_beta1, beta2, eps)
    torch._foreach_addcdiv_(params, torch._foreach_mul(grads, grad_step), denominators)
    torch._foreach_addcdiv_(params, torch._foreach_mul(exp_avgs, average_step), denominators)
