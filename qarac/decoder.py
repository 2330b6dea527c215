"""`QaracDecoderModel`: causal RoBERTa base + decoder head -> logits (B, T, V),
and greedy generation from a vector."""

from __future__ import annotations

import os

import torch
from torch import nn

from qarac import _hf  # noqa: F401
from qarac.base import config_for_base, new_base_model, release_padding_rows
from qarac.checkpoint import PretrainedMixin, load_base_model
from qarac.config import QaracConfig
from qarac.heads import QaracDecoderHead
from qarac.validation import check_token_ids, check_vectors
from transformers import RobertaModel


class QaracDecoderModel(PretrainedMixin, nn.Module):
    """Decodes a vector (B, H) and seed tokens (B, T) into next-token logits (B, T, V).

    Mirrors the legacy `QaracDecoderModel`: a RoBERTa base built with
    `is_decoder=True` (causal) followed by `QaracDecoderHead`, whose LM output
    matrix is this base's word-embedding matrix.
    """

    def __init__(self, config: QaracConfig, decoder: RobertaModel | None = None):
        super().__init__()
        self.config = config
        self.decoder = release_padding_rows(decoder if decoder is not None else new_base_model(config, is_decoder=True))
        self.decoder_head = QaracDecoderHead(config, self.decoder.embeddings.word_embeddings)

    @classmethod
    def from_base_model(cls, model_dir: str | os.PathLike, config: QaracConfig | None = None) -> "QaracDecoderModel":
        """Build around the RoBERTa weights in a local HF directory (head freshly initialised)."""
        config = config_for_base(model_dir, config)
        return cls(config, load_base_model(model_dir, config, is_decoder=True))

    def forward(self, vector: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: vector (B, H); input_ids (B, T) seed tokens starting with `<s>`; attention_mask (B, T) or None.

        Returns: logits (B, T, V); position t predicts token t+1.
        """
        check_token_ids(input_ids, attention_mask, self.config)
        check_vectors(vector, self.config, batch_size=input_ids.shape[0])
        return self.logits(vector, input_ids, attention_mask)

    def logits(self, vector: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        """`forward` without the input checks: (B, H), (B, T) -> (B, T, V)."""
        states = self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state  # (B, T, H)
        return self.decoder_head(vector, states, attention_mask)

    @torch.no_grad()
    def generate(self, vector: torch.Tensor, max_length: int = 32) -> torch.Tensor:
        """Greedy decoding from vectors.

        Every row starts with `<s>` and grows one argmax token per step until it
        has produced `</s>` or holds `max_length` tokens; rows that finished
        early are padded with `<pad>`. Each step reruns the whole sequence, which
        the legacy (bidirectional) head needs: its earlier logits change as the
        sequence grows.

        Args:
            vector: (B, H), any floating dtype (cast to the model's).
            max_length: most tokens per row, `<s>` and `</s>` included.

        Returns: (B, L) token ids, L <= max_length.
        """
        check_vectors(vector, self.config)
        vector = vector.to(self.decoder.dtype)  # e.g. float64 from numpy: the head concatenates it to the states
        if not 2 <= max_length <= self.config.max_tokens:
            raise ValueError(f"max_length must be in [2, {self.config.max_tokens}], got {max_length}")
        batch = vector.shape[0]
        tokens = torch.full((batch, 1), self.config.bos_token_id, dtype=torch.long, device=vector.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=vector.device)
        while tokens.shape[1] < max_length and not bool(finished.all()):
            mask = (tokens != self.config.pad_token_id).long()
            mask[:, 0] = 1
            logits = self(vector, tokens, mask)  # (B, L, V)
            next_token = logits[:, -1].argmax(dim=-1)
            next_token = next_token.masked_fill(finished, self.config.pad_token_id)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            finished |= next_token == self.config.eos_token_id
        return tokens
