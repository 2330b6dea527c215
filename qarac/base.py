"""The RoBERTa base models QARAC is built around, and what differs between
the `transformers` lines the port runs on (4.57.x and 5.x).

Every QARAC module gets its base models and RoBERTa layers from here, so the
differences between the two lines live in one place:

- a `RobertaLayer` returns a tuple `(hidden_states, ...)` on 4.57 and the
  hidden states tensor itself on 5.x (`run_layer`);
- 4.57 imports TensorFlow from `image_transforms` whenever it is installed
  (handled by `qarac._hf`, imported first); 5.x has no TensorFlow support.

Both lines build the same parameters under the same names, so a checkpoint
saved on one loads on the other.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from qarac import _hf  # noqa: F401  (must run before anything imports transformers)
from qarac.checkpoint import read_roberta_config
from qarac.config import QaracConfig
import transformers
from transformers import RobertaModel
from transformers.models.roberta.modeling_roberta import RobertaLMHead

TRANSFORMERS_VERSION = transformers.__version__
TRANSFORMERS_MAJOR = int(TRANSFORMERS_VERSION.split(".")[0])


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


def config_for_base(model_dir: str | os.PathLike, config: QaracConfig | None) -> QaracConfig:
    """The QaracConfig for a base directory: its architecture, with `config`'s options."""
    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    if config is None:
        return architecture
    return config.replace(base=architecture.base)


def new_lm_head(config: QaracConfig, word_embeddings: nn.Embedding) -> RobertaLMHead:
    """A RoBERTa LM head whose output matrix is `word_embeddings`' weight (tied).

    Its output bias is one parameter, `bias`, which the output layer uses. 4.57
    ties `decoder.bias` to `bias` in the head itself; 5.x leaves that to the
    enclosing HF model's tying, which QARAC's head does not have, so the tie is
    made here for both lines.
    """
    head = RobertaLMHead(config.roberta_config(is_decoder=False))
    head.decoder.weight = word_embeddings.weight
    head.decoder.bias = head.bias
    return head


def run_layer(layer: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """One `RobertaLayer` over (B, T, H) with an additive (B, 1, T, T) mask -> (B, T, H), on either line."""
    output = layer(hidden_states, attention_mask=attention_mask)
    return output[0] if isinstance(output, tuple) else output
