"""The two QARAC heads: global attention pooling (encoder) and the decoder head.

Mirrors `GlobalAttentionPoolingHead` and `QaracDecoderHead` of the legacy Keras
code (`legacy_keras/`); docs/legacy.md §1.1 and §1.3 give the formulas.
"""

from __future__ import annotations

import torch
from torch import nn

from qarac import _hf  # noqa: F401
from qarac.base import new_lm_head, run_layer
from qarac.config import QaracConfig
from transformers.models.roberta.modeling_roberta import RobertaLayer

# TensorFlow's l2_normalize floors the squared norm at this value.
L2_EPSILON = 1e-12


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / sqrt(max(sum(x**2), 1e-12)), exactly as `tf.math.l2_normalize`."""
    squared_norm = x.pow(2).sum(dim=dim, keepdim=True)
    return x * torch.rsqrt(squared_norm.clamp_min(L2_EPSILON))


class GlobalAttentionPoolingHead(nn.Module):
    """Pools contextual vectors (B, T, H) into one vector per text (B, H).

    Mirrors the legacy `GlobalAttentionPoolingHead`. Both projections are stored
    as (H_in, H_out) and applied as `X @ G`, the layout of the Keras weights, so
    the weight bridge copies them without a transpose.

        g   = (sum_i m_i X_i) @ G        global context      (B, H)
        l_i = X_i @ L                    local projections   (B, T, H)
        a_i = cos(l_i, g)                attention weights   (B, T)
        E   = sum_i a_i m_i X_i                              (B, H)

    With `config.pooling_masks_padding` False (legacy), the global sum runs over
    every position whatever the mask, as the Keras layer did.
    """

    def __init__(self, config: QaracConfig):
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.global_projection = nn.Parameter(torch.empty(width, width))
        self.local_projection = nn.Parameter(torch.empty(width, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Keras' default `add_weight` initializer is Glorot uniform.
        nn.init.xavier_uniform_(self.global_projection)
        nn.init.xavier_uniform_(self.local_projection)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: hidden_states (B, T, H); attention_mask (B, T), 1 for tokens, or None.

        Returns: (B, H).
        """
        if attention_mask is None:
            weights = torch.ones(hidden_states.shape[:2], dtype=hidden_states.dtype, device=hidden_states.device)
        else:
            weights = attention_mask.to(hidden_states.dtype)  # (B, T)
        summed_for_global = hidden_states if not self.config.pooling_masks_padding else hidden_states * weights[..., None]
        global_context = summed_for_global.sum(dim=1) @ self.global_projection  # (B, H)
        local_projection = hidden_states @ self.local_projection  # (B, T, H)
        attention = (l2_normalize(local_projection) * l2_normalize(global_context)[:, None, :]).sum(dim=-1)  # (B, T)
        return ((attention * weights)[..., None] * hidden_states).sum(dim=1)  # (B, H)


def additive_attention_mask(attention_mask: torch.Tensor | None, causal: bool, batch: int, length: int,
                            dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """The (B, 1, T, T) additive mask a `RobertaLayer` takes, or None for full attention.

    Args:
        attention_mask: (B, T), 1 for positions that may be attended to, or None.
        causal: forbid attending to later positions.
    """
    if attention_mask is None and not causal:
        return None
    allowed = torch.ones(batch, 1, length, length, dtype=torch.bool, device=device)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]  # keys only
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    # A query row with nothing allowed (all-padding prefix) would softmax over -inf only: let it see
    # itself, which keeps the output finite and affects no real position.
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


class QaracDecoderHead(nn.Module):
    """Turns a vector (B, H) and decoder states (B, T, H) into logits (B, T, V).

    Mirrors the legacy `QaracDecoderHead`: prepend the vector as position 0,
    run `layer_0`, drop position 0, run `layer_1`, then the LM `head`, whose
    output matrix is the decoder base model's word-embedding matrix (tied).

    The two layers are built with `is_decoder=False` on purpose: with SDPA a
    decoder-flagged layer turns causal whenever it gets no mask, which would
    silently break the legacy (bidirectional) behaviour. Causality is decided
    here, by `config.causal_decoder_head`, through an explicit mask.
    """

    def __init__(self, config: QaracConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.config = config
        layer_config = config.roberta_config(is_decoder=False)
        self.layer_0 = RobertaLayer(layer_config)
        self.layer_1 = RobertaLayer(layer_config)
        self.head = new_lm_head(config, word_embeddings)  # tied, as TFRobertaLMHead(config, embeddings)

    def forward(self, vector: torch.Tensor, hidden_states: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: vector (B, H); hidden_states (B, T, H); attention_mask (B, T) or None.

        Returns: logits (B, T, V).
        """
        batch, length, _ = hidden_states.shape
        causal = self.config.causal_decoder_head
        # Legacy: the head is never given the mask (docs/legacy.md §1.3), so padding is attended to.
        mask = attention_mask if causal else None
        if mask is not None:
            mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)  # (B, T+1): the vector is always visible
        extended = torch.cat([vector[:, None, :], hidden_states], dim=1)  # (B, T+1, H)
        mask_0 = additive_attention_mask(mask, causal, batch, length + 1, extended.dtype, extended.device)
        extended = run_layer(self.layer_0, extended, mask_0)
        states = extended[:, 1:]  # (B, T, H)
        mask_1 = additive_attention_mask(None if mask is None else mask[:, 1:], causal, batch, length,
                                         states.dtype, states.device)
        states = run_layer(self.layer_1, states, mask_1)
        return self.head(states)  # (B, T, V)
