"""`QaracEncoderModel`: RoBERTa base + global attention pooling head -> (B, H)."""

from __future__ import annotations

import os

import torch
from torch import nn

from qarac import _hf  # noqa: F401
from qarac.base import config_for_base, new_base_model, release_padding_rows
from qarac.checkpoint import PretrainedMixin, load_base_model
from qarac.config import QaracConfig
from qarac.heads import GlobalAttentionPoolingHead
from qarac.validation import check_token_ids
from transformers import RobertaModel


class QaracEncoderModel(PretrainedMixin, nn.Module):
    """Encodes token ids (B, T) into one vector per text (B, H).

    Mirrors the legacy `QaracEncoderModel`. The question and answer encoders of
    the trainer are two of these built around one shared `encoder` module.
    """

    def __init__(self, config: QaracConfig, encoder: RobertaModel | None = None):
        super().__init__()
        self.config = config
        self.encoder = release_padding_rows(encoder if encoder is not None else new_base_model(config))
        self.head = GlobalAttentionPoolingHead(config)

    @classmethod
    def from_base_model(cls, model_dir: str | os.PathLike, config: QaracConfig | None = None) -> "QaracEncoderModel":
        """Build around the RoBERTa weights in a local HF directory (head freshly initialised)."""
        config = config_for_base(model_dir, config)
        return cls(config, load_base_model(model_dir, config))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: input_ids (B, T) long; attention_mask (B, T) or None (all tokens real).

        Returns: (B, H) text vectors.
        """
        check_token_ids(input_ids, attention_mask, self.config)
        return self.pool(self.contextual_states(input_ids, attention_mask), attention_mask)

    def contextual_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The base model's last hidden state (B, T, H), inputs unchecked."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool(self, states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """This encoder's head over base states (B, T, H) -> (B, H)."""
        # Legacy: the head is handed no mask, so padding leaks into both of its sums.
        head_mask = attention_mask if self.config.pooling_masks_padding else None
        return self.head(states, head_mask)
