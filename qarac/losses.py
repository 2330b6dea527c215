"""The combined QARAC loss: the plain sum of the four objectives (docs/legacy.md §1.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from qarac.config import QaracConfig
from qarac.trainer import QaracTrainerOutput, TensorFields, Tokens


@dataclass
class LossBreakdown(TensorFields):
    """Each objective's scalar loss and their sum (`total`, what is minimised)."""

    encode_decode: torch.Tensor
    question_answering: torch.Tensor
    reasoning: torch.Tensor
    consistency: torch.Tensor
    total: torch.Tensor

    def item(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in self.as_dict().items()}


def at_least_float32(value: torch.Tensor) -> torch.Tensor:
    """Half-precision values upcast to float32 for the loss's reductions; float32 and float64 kept
    (a float64 run, e.g. the parity harness's float64 check, stays float64 end to end)."""
    return value if value.dtype in (torch.float32, torch.float64) else value.float()


def sequence_cross_entropy(logits: torch.Tensor, target: Tokens, ignore_padding: bool) -> torch.Tensor:
    """Mean token cross-entropy of logits (B, T, V) against target ids (B, T).

    Legacy (`ignore_padding=False`): Keras' `SparseCategoricalCrossentropy(from_logits=True)`
    averages over all B*T positions, padding targets included. Fixed: over real target tokens.
    """
    per_token = F.cross_entropy(at_least_float32(logits.flatten(0, 1)), target.input_ids.flatten(), reduction="none")
    if not ignore_padding:
        return per_token.mean()
    weights = target.attention_mask.flatten().to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


class QaracLoss(nn.Module):
    """Sums cross-entropy (encode_decode, reasoning) and mean squared error
    (question_answering against zeros, consistency against the labels)."""

    def __init__(self, config: QaracConfig):
        super().__init__()
        self.config = config

    def forward(self, outputs: QaracTrainerOutput, targets: Mapping[str, object]) -> LossBreakdown:
        """Args:
            outputs: the trainer's outputs.
            targets: `encode_decode` and `reasoning` token batches (B, T), `consistency` labels (B,).
        """
        ignore = self.config.loss_ignores_padding
        encode_decode = sequence_cross_entropy(outputs.encode_decode, targets["encode_decode"], ignore)
        reasoning = sequence_cross_entropy(outputs.reasoning, targets["reasoning"], ignore)
        question_answering = at_least_float32(outputs.question_answering).pow(2).mean()
        labels = targets["consistency"].to(outputs.consistency.dtype)
        if labels.shape != outputs.consistency.shape:
            raise ValueError(f"consistency labels have shape {tuple(labels.shape)}, the outputs "
                             f"{tuple(outputs.consistency.shape)}")
        consistency = at_least_float32(outputs.consistency - labels).pow(2).mean()
        total = encode_decode + question_answering + reasoning + consistency
        return LossBreakdown(encode_decode, question_answering, reasoning, consistency, total)
