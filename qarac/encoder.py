"""`QaracEncoderModel`: RoBERTa base + global attention pooling head -> (B, H)."""

from __future__ import annotations

import os

import torch
from torch import nn

from qarac import _hf  # noqa: F401
from qarac.checkpoint import PretrainedMixin, load_base_model
from qarac.config import QaracConfig
from qarac.heads import GlobalAttentionPoolingHead
from qarac.validation import check_token_ids
from transformers import RobertaModel


def new_base_model(config: QaracConfig, is_decoder: bool = False) -> RobertaModel:
    """A randomly initialised RoBERTa base with the config's pooler option."""
    return RobertaModel(config.roberta_config(is_decoder=is_decoder), add_pooling_layer=config.keep_pooler)


def release_padding_rows(base: RobertaModel) -> RobertaModel:
    """Let the `<pad>` rows of the word and position tables receive gradients, as in TF.

    HF's PyTorch RoBERTa builds both embeddings with `padding_idx`, which zeroes
    the gradient of that row; TF's has no such rule. Where padding influences
    the loss (the legacy preset: padding leaks into the pooling head and the
    cross-entropy), the legacy trains that row and so must the port. Where it
    does not (the default), its gradient is zero anyway. Forward values are unchanged.
    """
    base.embeddings.word_embeddings.padding_idx = None
    base.embeddings.position_embeddings.padding_idx = None
    return base


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
        from qarac.trainer import config_for_base  # local import: trainer imports this module

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
