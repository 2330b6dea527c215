"""The batch structure handed from the data pipeline to the QARAC trainer.

This is the contract between `qarac.data` and the model: a `QaracBatch` holds
nine tokenised inputs and three targets. The fourth objective,
`question_answering`, has no stored target: it is zeros of shape (B, H), which
the loss builds for itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

# Inputs of QaracTrainerModel, in the order docs/legacy.md §1.4 lists them.
INPUT_NAMES = ("all_text", "offset_text", "question", "answer", "proposition0",
               "proposition1", "conclusion_offset", "statement0", "statement1")
# Stored targets: token targets for the two decoding objectives, labels for consistency.
TARGET_NAMES = ("encode_decode", "reasoning", "consistency")


@dataclass
class TokenBatch:
    """A padded batch of token sequences.

    Attributes:
        input_ids: (B, T) int64 token ids, padding filled with the pad id.
        attention_mask: (B, T) int64, 1 on real tokens, 0 on padding. For a
            target it is the target mask: 1 where the loss should count.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenBatch:
        """A copy on `device`."""
        return TokenBatch(self.input_ids.to(device, non_blocking=non_blocking),
                          self.attention_mask.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class QaracBatch:
    """One training batch of the four QARAC objectives.

    Attributes:
        inputs: `TokenBatch` per name in INPUT_NAMES.
        targets: `encode_decode` and `reasoning` as `TokenBatch` (ids and target
            mask, each (B, T) with its own T), `consistency` a (B,) float32
            tensor of labels in {1, 0, -1}.
    """

    inputs: dict[str, TokenBatch]
    targets: dict[str, TokenBatch | torch.Tensor]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QaracBatch:
        """A copy with every tensor on `device`."""
        return QaracBatch(
            {name: batch.to(device, non_blocking) for name, batch in self.inputs.items()},
            {name: target.to(device, non_blocking=non_blocking)
             for name, target in self.targets.items()},
        )

    def __len__(self) -> int:
        return len(self.inputs[INPUT_NAMES[0]])


def pad_sequences(seqs: Sequence[Sequence[int] | torch.Tensor], pad_id: int) -> TokenBatch:
    """Right-pad token sequences to the longest one (RoBERTa pads on the right).

    Args:
        seqs: B sequences of token ids, lists or 1-D tensors, of any lengths.
        pad_id: id written into the padding.

    Returns:
        A `TokenBatch` of shape (B, T), T the longest length.

    Raises:
        ValueError: `seqs` is empty.
    """
    if len(seqs) == 0:
        raise ValueError("pad_sequences needs at least one sequence, got none")
    tensors = [torch.as_tensor(seq, dtype=torch.long).reshape(-1) for seq in seqs]
    longest = max(len(t) for t in tensors)
    input_ids = torch.full((len(tensors), longest), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(tensors), longest), dtype=torch.long)  # (B, T)
    for row, tokens in enumerate(tensors):
        input_ids[row, :len(tokens)] = tokens
        attention_mask[row, :len(tokens)] = 1
    return TokenBatch(input_ids, attention_mask)
