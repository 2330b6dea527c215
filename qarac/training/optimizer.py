"""The optimizer and learning-rate schedule matched to the legacy Keras ones.

The legacy trained with Keras `compile`/`fit`, Nadam and an `ExponentialDecay`
learning rate (1e-5, 100 steps, rate 0.99). `make_optimizer` and
`make_scheduler` reproduce both (docs/optimizer.md gives the formulas).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qarac.optim import KerasNadam
from qarac.training.config import TrainConfig


def make_optimizer(model: nn.Module, train_config: TrainConfig) -> KerasNadam:
    """torch's NAdam set to compute Keras' (tf-keras 2.21) Nadam update, as one multi-tensor step.

    `momentum_decay=1.0`: torch's momentum schedule is beta1 (1 - 0.5 0.96^(t psi)),
    Keras' is beta1 (1 - 0.5 0.96^t). `eps` is added to sqrt(v_hat) by both;
    Keras' default is 1e-7. Both count steps from t = 1. See docs/optimizer.md.
    """
    return KerasNadam(model.parameters(), lr=train_config.learning_rate,
                      betas=(train_config.beta1, train_config.beta2), eps=train_config.epsilon,
                      implementation=optimizer_implementation(train_config))


def optimizer_implementation(train_config: TrainConfig) -> str:
    """`train_config.optimizer`, with the default multi-tensor step compiled under `compile`."""
    if train_config.compile and train_config.optimizer == "foreach":
        return "compiled"
    return train_config.optimizer


def exponential_decay(step: int, decay_steps: int, decay_rate: float, staircase: bool = False) -> float:
    """Keras `ExponentialDecay`'s factor: rate ** (step / decay_steps), the exponent floored if staircase."""
    exponent = step / decay_steps
    if staircase:
        exponent = math.floor(exponent)
    return decay_rate ** exponent


def make_scheduler(optimizer: torch.optim.Optimizer, train_config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Keras `ExponentialDecay(learning_rate, decay_steps, decay_rate, staircase)` as a LambdaLR.

    Keras evaluates the schedule at `optimizer.iterations` before it is
    incremented, so update k (0-based) uses lr(k); LambdaLR has been stepped k
    times before update k, so its factor at k is the same.
    """
    def factor(step: int) -> float:
        return exponential_decay(step, train_config.decay_steps, train_config.decay_rate, train_config.staircase)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
