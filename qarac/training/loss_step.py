"""The forward and the loss of one training step, compiled under `--compile`."""

from __future__ import annotations

import logging

import torch
from torch import nn

from qarac.losses import LossBreakdown, QaracLoss
from qarac.training.config import TrainConfig
from qarac.training.runtime import Runtime

logger = logging.getLogger(__name__)


def compile_mode(train_config: TrainConfig, runtime: "Runtime") -> str | None:
    """torch.compile's mode for the forward + loss: CUDA graphs ("reduce-overhead") on one CUDA
    device when every batch has one shape (`padding=corpus_fit` pads each field to its corpus
    length), else the default (shapes vary from batch to batch; graphs would be recorded per shape)."""
    fixed_shapes = train_config.data_config().padding == "corpus_fit"
    if runtime.device.type == "cuda" and fixed_shapes and not runtime.distributed:
        return "reduce-overhead"
    return None


def make_loss_step(model: nn.Module, loss_fn: QaracLoss, train_config: TrainConfig, runtime: "Runtime"):
    """(inputs, targets) -> LossBreakdown: the forward and the loss, compiled under `compile`."""
    def forward_and_loss(inputs, targets) -> dict[str, torch.Tensor]:
        return loss_fn(model(inputs), targets).as_dict()

    if not train_config.compile:
        return lambda inputs, targets: LossBreakdown(**forward_and_loss(inputs, targets))
    mode = compile_mode(train_config, runtime)
    if train_config.data_config().padding != "corpus_fit" and runtime.is_main:
        # Measured at mid size on CPU: 10.7 s a step against 0.6-0.9 s eager (bench/README.md section 10).
        logger.warning("--compile with per-batch padding: every new combination of field lengths is compiled "
                       "again; --data-option padding=corpus_fit gives every batch one shape")
    compiled = torch.compile(forward_and_loss, mode=mode)

    def step(inputs, targets) -> LossBreakdown:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are done with
        return LossBreakdown(**compiled(inputs, targets))

    return step
