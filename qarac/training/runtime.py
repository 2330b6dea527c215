"""Where a training process runs: one process, or one of several under torchrun (DDP)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from qarac.trainer import QaracTrainerModel
from qarac.training.config import TrainConfig


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its device and its place among the processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(train_config: TrainConfig) -> Runtime:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA).

    Raises:
        ValueError: `device="cuda"` without a CUDA device.
    """
    if train_config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch finds no CUDA device; use --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Runtime(torch.device(train_config.device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if train_config.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def wrap_distributed(model: QaracTrainerModel, runtime: Runtime) -> nn.Module:
    """DDP around the model when there are several processes.

    `find_unused_parameters` is needed only with the legacy pooler: RoBERTa's
    pooler is never used by QARAC, so its parameters get no gradient, and DDP
    without the flag waits for their all-reduce forever (it raises at the next
    step). The default config drops the pooler, every parameter gets a
    gradient, and DDP skips the costly search for unused parameters.
    """
    if not runtime.distributed:
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=model.config.keep_pooler)


def reduce_losses(losses: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """The losses averaged over ranks (what the global batch scored)."""
    if not runtime.distributed:
        return losses
    values = torch.tensor([losses[name] for name in losses], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(values)
    return {name: float(value) / runtime.world_size for name, value in zip(losses, values)}
