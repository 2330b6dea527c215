"""`QaracTrainerModel`: the two encoders and the decoder wired into the four
training objectives of SPEC.md section 1.4."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping, Protocol

import torch
from torch import nn

from qarac import _hf  # noqa: F401
from qarac.batch import INPUT_NAMES
from qarac.checkpoint import PretrainedMixin, load_base_model, read_roberta_config
from qarac.config import QaracConfig
from qarac.decoder import QaracDecoderModel
from qarac.encoder import QaracEncoderModel, new_base_model
from qarac.heads import l2_normalize



class Tokens(Protocol):
    """Anything with (B, T) `input_ids` and `attention_mask`, e.g. `qarac.batch.TokenBatch`."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class QaracTrainerOutput:
    """The four named outputs of the trainer.

    Attributes:
        encode_decode: (B, T, V) logits reconstructing `all_text` from its vector.
        question_answering: (B, H) question vector minus answer vector (target: zeros).
        reasoning: (B, T, V) logits of the conclusion decoded from the sum of the propositions' vectors.
        consistency: (B,) cosine of the two statements' vectors (target: +1, 0, -1).
    """

    encode_decode: torch.Tensor
    question_answering: torch.Tensor
    reasoning: torch.Tensor
    consistency: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def config_for_base(model_dir: str | os.PathLike, config: QaracConfig | None) -> QaracConfig:
    """The QaracConfig for a base directory: its architecture, with `config`'s options."""
    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    if config is None:
        return architecture
    return config.replace(base=architecture.base)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise normalised dot product, (B, H) x (B, H) -> (B,), as Keras' `Dot(normalize=True)`."""
    return (l2_normalize(a) * l2_normalize(b)).sum(dim=-1)


class QaracTrainerModel(PretrainedMixin, nn.Module):
    """Mirrors the legacy `QaracTrainerModel`.

    `question_encoder` and `answer_encoder` share one RoBERTa base (the same
    module object, so the same parameters) and have a pooling head each; the
    `decoder` has a base of its own.
    """

    def __init__(self, config: QaracConfig, encoder_base: nn.Module | None = None,
                 decoder_base: nn.Module | None = None):
        super().__init__()
        self.config = config
        shared_base = encoder_base if encoder_base is not None else new_base_model(config)
        self.question_encoder = QaracEncoderModel(config, shared_base)
        self.answer_encoder = QaracEncoderModel(config, shared_base)
        self.decoder = QaracDecoderModel(config, decoder_base)

    @classmethod
    def from_base_model(cls, model_dir: str | os.PathLike, config: QaracConfig | None = None) -> "QaracTrainerModel":
        """Both bases from the RoBERTa weights in a local HF directory, heads freshly initialised.

        Args:
            model_dir: a local HF RoBERTa checkpoint directory.
            config: compatibility options to use; its `base` is replaced by the directory's architecture.
        """
        config = config_for_base(model_dir, config)
        return cls(config, load_base_model(model_dir, config), load_base_model(model_dir, config, is_decoder=True))

    def _encode(self, tokens: Tokens, question: bool = False) -> torch.Tensor:
        encoder = self.question_encoder if question else self.answer_encoder
        return encoder(tokens.input_ids, tokens.attention_mask)

    def _decode(self, vector: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        return self.decoder(vector, tokens.input_ids, tokens.attention_mask)

    def forward(self, inputs: Mapping[str, Tokens]) -> QaracTrainerOutput:
        """Args: inputs keyed by INPUT_NAMES, each with (B, T_name) ids and mask.

        Returns: the four outputs (see QaracTrainerOutput).
        """
        missing = [name for name in INPUT_NAMES if name not in inputs]
        if missing:
            raise KeyError(f"trainer inputs lack {missing}; expected all of {list(INPUT_NAMES)}")
        encode_decode = self._decode(self._encode(inputs["all_text"]), inputs["offset_text"])
        question_answering = self._encode(inputs["question"], question=True) - self._encode(inputs["answer"])
        propositions = self._encode(inputs["proposition0"]) + self._encode(inputs["proposition1"])
        reasoning = self._decode(propositions, inputs["conclusion_offset"])
        consistency = cosine(self._encode(inputs["statement0"]), self._encode(inputs["statement1"]))
        return QaracTrainerOutput(encode_decode, question_answering, reasoning, consistency)
