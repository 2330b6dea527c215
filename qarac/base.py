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

import contextlib
import os
from typing import Callable, Iterator, Mapping, TypeVar

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

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Modules built inside draw no random weights (their tensors hold whatever memory held).

    Only for modules whose every weight is loaded next (`built_with_weights`):
    drawing roberta-base's 265 M random numbers costs about 2 s a model on two
    cores, and the harness rebuilds the model several times. transformers' own
    switch lives in `modeling_utils` on 4.57 and in `initialization` on 5.x.
    """
    if TRANSFORMERS_MAJOR >= 5:
        from transformers.initialization import no_init_weights
    else:
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield


def built_with_weights(build: Callable[[], ModuleT], state: Mapping[str, torch.Tensor],
                       allow_unexpected: bool = False, share: bool = False) -> tuple[ModuleT, list[str]]:
    """`build()` without random initialisation, then every one of its weights taken from `state`.

    Args:
        share: the module's tensors become `state`'s own (same storage, same dtype and device
            required): no copy, and a change to one is a change to the other; else copied in.

    Returns:
        The module, and the keys of `state` it has no place for (empty unless `allow_unexpected`).

    Raises:
        RuntimeError: a weight of the module is missing from `state` (none is ever left
            uninitialised), or `state` holds a key the module lacks and not `allow_unexpected`.
    """
    with skip_init():
        module = build()
    own = module.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or (unexpected and not allow_unexpected):
        raise RuntimeError(f"the weights do not fit the module: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if share:
        with torch.no_grad():
            for name, tensor in own.items():
                if tensor.shape != state[name].shape or tensor.dtype != state[name].dtype:
                    raise RuntimeError(f"cannot share {name}: {tuple(state[name].shape)} {state[name].dtype} "
                                       f"for {tuple(tensor.shape)} {tensor.dtype}")
                tensor.data = state[name]
    else:
        module.load_state_dict({name: state[name] for name in own})
    return module, unexpected


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
