"""`QaracTrainerModel`: the two encoders and the decoder wired into the four
training objectives of docs/legacy.md §1.4."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qarac import _hf  # noqa: F401
from qarac.batch import INPUT_NAMES
from qarac.base import config_for_base, new_base_model
from qarac.checkpoint import PretrainedMixin, load_base_model
from qarac.config import QaracConfig
from qarac.decoder import QaracDecoderModel
from qarac.encoder import QaracEncoderModel
from qarac.heads import l2_normalize
from qarac.validation import check_token_ids, check_vectors

# The trainer's encoder inputs: the question encoder's, then the answer encoder's six.
ANSWER_INPUTS = ("all_text", "answer", "proposition0", "proposition1", "statement0", "statement1")
ENCODER_INPUTS = ("question", *ANSWER_INPUTS)


class Tokens(Protocol):
    """Anything with (B, T) `input_ids` and `attention_mask`, e.g. `qarac.batch.TokenBatch`."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class TensorFields:
    """Mixin for dataclasses whose fields are named tensors."""

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class QaracTrainerOutput(TensorFields):
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


def concat_padded(batches: Sequence[Tokens], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token batches to their common length and stack them along the batch.

    Args:
        batches: N batches of (B_n, T_n) ids and masks.
        pad_token_id: id written into the added padding (whose mask is 0).

    Returns:
        (ids, mask), each (sum B_n, max T_n).
    """
    length = max(tokens.input_ids.shape[1] for tokens in batches)
    ids = [F.pad(tokens.input_ids, (0, length - tokens.input_ids.shape[1]), value=pad_token_id)
           for tokens in batches]  # each (B_n, T)
    masks = [F.pad(tokens.attention_mask, (0, length - tokens.attention_mask.shape[1]), value=0)
             for tokens in batches]  # each (B_n, T)
    return torch.cat(ids), torch.cat(masks)


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
        if self.uses_batched_calls:
            return self._forward_batched(inputs)
        return self._forward_per_call(inputs)

    @property
    def uses_batched_calls(self) -> bool:
        """Whether `forward` batches the encoder calls and the decoder calls.

        Batching pads every input to the longest one. That leaves results
        unchanged only if padding is invisible: the pooling head must mask it
        (`pooling_masks_padding`) and the decoder head must be causal and masked
        (`causal_decoder_head`), so that appended padding is never attended to
        by a real position. In the legacy semantics the head pools over
        padding and the decoder head attends to later (padding) positions, so
        extra padding would change the outputs: the per-call path is used there.
        Rows with no real token at all (mask all zeros) are outside this promise:
        what the base computes for them depends on the padded length.
        """
        config = self.config
        return config.batched_calls and config.pooling_masks_padding and config.causal_decoder_head

    def _forward_per_call(self, inputs: Mapping[str, Tokens]) -> QaracTrainerOutput:
        """Six answer-encoder calls, one question-encoder call and two decoder calls, as the legacy."""
        encode_decode = self._decode(self._encode(inputs["all_text"]), inputs["offset_text"])
        question_answering = self._encode(inputs["question"], question=True) - self._encode(inputs["answer"])
        propositions = self._encode(inputs["proposition0"]) + self._encode(inputs["proposition1"])
        reasoning = self._decode(propositions, inputs["conclusion_offset"])
        consistency = cosine(self._encode(inputs["statement0"]), self._encode(inputs["statement1"]))
        return QaracTrainerOutput(encode_decode, question_answering, reasoning, consistency)

    def _forward_batched(self, inputs: Mapping[str, Tokens]) -> QaracTrainerOutput:
        """The same outputs from one shared-base forward and one decoder forward."""
        for name in INPUT_NAMES:
            check_token_ids(inputs[name].input_ids, inputs[name].attention_mask, self.config, name=name)
        vectors = self._encode_all([inputs[name] for name in ENCODER_INPUTS])
        vector = dict(zip(ENCODER_INPUTS, vectors))
        propositions = vector["proposition0"] + vector["proposition1"]
        encode_decode, reasoning = self._decode_all([vector["all_text"], propositions],
                                                    [inputs["offset_text"], inputs["conclusion_offset"]])
        question_answering = vector["question"] - vector["answer"]
        consistency = cosine(vector["statement0"], vector["statement1"])
        return QaracTrainerOutput(encode_decode, question_answering, reasoning, consistency)

    def _encode_all(self, batches: Sequence[Tokens]) -> list[torch.Tensor]:
        """The question batch (first) and the answer batches through the shared base at once.

        Returns: one (B_n, H) vector batch per input, in order.
        """
        sizes = [tokens.input_ids.shape[0] for tokens in batches]
        ids, mask = concat_padded(batches, self.config.pad_token_id)  # (N, T)
        states = self.answer_encoder.contextual_states(ids, mask)  # (N, T, H)
        question = self.question_encoder.pool(states[:sizes[0]], mask[:sizes[0]])  # (B_0, H)
        answers = self.answer_encoder.pool(states[sizes[0]:], mask[sizes[0]:])  # (N - B_0, H)
        return [question, *answers.split(sizes[1:])]

    def _decode_all(self, vectors: Sequence[torch.Tensor], seeds: Sequence[Tokens]) -> list[torch.Tensor]:
        """Every (vector, seed tokens) pair through the decoder at once.

        Returns: one (B_n, T_n, V) logits batch per pair, cut back to its own length T_n.
        """
        sizes = [tokens.input_ids.shape[0] for tokens in seeds]
        ids, mask = concat_padded(seeds, self.config.pad_token_id)  # (N, T)
        vector = torch.cat(list(vectors))  # (N, H)
        check_vectors(vector, self.config, batch_size=ids.shape[0])
        logits = self.decoder.logits(vector, ids, mask)  # (N, T, V)
        return [chunk[:, :tokens.input_ids.shape[1]] for chunk, tokens in zip(logits.split(sizes), seeds)]
