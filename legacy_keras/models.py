"""Keras models of the legacy QARAC: encoder, decoder and the four-objective trainer.

Faithful to the original Keras implementation (docs/legacy.md section 1): the encoder
and decoder are `TFPreTrainedModel`s wrapping a `TFRobertaModel` that is built
outside them (as the original did, so the base models' variables are named
`tf_roberta_model/...`, `tf_roberta_model_1/...`), and the trainer is a plain
`keras.Model`. The PyTorch port mirrors these classes under the same names in
`qarac/encoder.py`, `qarac/decoder.py` and `qarac/trainer.py`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from legacy_keras._tf import keras, tf, transformers
from legacy_keras.layers import GlobalAttentionPoolingHead, QaracDecoderHead

TOKEN_KEYS = ("input_ids", "attention_mask")

TRAINER_INPUTS = (
    "all_text",
    "offset_text",
    "question",
    "answer",
    "proposition0",
    "proposition1",
    "conclusion_offset",
    "statement0",
    "statement1",
)

TRAINER_OUTPUTS = ("encode_decode", "question_answering", "reasoning", "consistency")


def max_tokens(config) -> int:
    """Longest sequence RoBERTa's position table allows (positions start at pad_token_id + 1)."""
    return int(config.max_position_embeddings) - int(config.pad_token_id) - 1


def check_tokens(tokens, config, name: str = "tokens"):
    """Validates token ids (a tensor, or a dict of `input_ids`/`attention_mask`).

    Shape and length are checked statically; the id range is checked when the
    ids are concrete (eager execution). Under graph execution `TFRobertaModel`'s
    own bound check still raises.

    Returns:
        The tokens, unchanged.

    Raises:
        ValueError: on a missing key, a rank other than 2, mismatched mask, a
            sequence longer than the positions allow, or ids outside the vocabulary.
    """
    if isinstance(tokens, Mapping):
        missing = [key for key in ("input_ids",) if key not in tokens]
        if missing:
            raise ValueError(f"{name}: expected a dict with keys {list(TOKEN_KEYS)}, got keys {sorted(tokens)}")
        ids = tokens["input_ids"]
        mask = tokens.get("attention_mask")
    else:
        ids, mask = tokens, None
    ids_shape = tf.TensorShape(getattr(ids, "shape", np.shape(ids)))
    if ids_shape.rank != 2:
        raise ValueError(f"{name}: expected token ids of shape (batch, tokens), got shape {ids_shape}")
    if mask is not None:
        mask_shape = tf.TensorShape(getattr(mask, "shape", np.shape(mask)))
        if not mask_shape.is_compatible_with(ids_shape):
            raise ValueError(f"{name}: attention_mask shape {mask_shape} does not match input_ids shape {ids_shape}")
    length = ids_shape[1]
    if length is not None and length > max_tokens(config):
        raise ValueError(
            f"{name}: sequence of {length} tokens is longer than the {max_tokens(config)} positions the model "
            f"allows (max_position_embeddings={config.max_position_embeddings}); truncate it"
        )
    if tf.executing_eagerly() and (isinstance(ids, np.ndarray) or hasattr(ids, "numpy")):
        values = np.asarray(ids)
        if values.size and (values.min() < 0 or values.max() >= config.vocab_size):
            raise ValueError(
                f"{name}: token ids must lie in [0, {config.vocab_size}) (the vocabulary), "
                f"got ids from {values.min()} to {values.max()}"
            )
    return tokens


class QaracEncoderModel(transformers.TFPreTrainedModel):
    """Base RoBERTa + global attention pooling head: tokens (B, T) -> vector (B, H).

    Legacy quirk kept: the base model is given the attention mask (when the
    input is a dict), the head is not, so padding changes the vector.

    Args:
        base_model: a built `TFRobertaModel` (may be shared with another encoder).
        fix_local_projection_gradient: passed to the pooling head (off: faithful).
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init__(self, base_model, fix_local_projection_gradient: bool = False, **kwargs):
        super().__init__(base_model.config, **kwargs)
        self.encoder = base_model
        self.head = GlobalAttentionPoolingHead(fix_local_projection_gradient=fix_local_projection_gradient)

    def call(self, inputs, training=False):
        """Args:
            inputs: token ids (B, T) or a dict of `input_ids`/`attention_mask`.

        Returns:
            (B, H) one vector per text.
        """
        check_tokens(inputs, self.config, "encoder input")
        hidden_states = self.encoder(inputs, training=training).last_hidden_state  # (B, T, H)
        return self.head(hidden_states)  # (B, H)

    def get_config(self):
        config = super().get_config()
        config["fix_local_projection_gradient"] = self.head.fix_local_projection_gradient
        return config


class QaracDecoderModel(transformers.TFPreTrainedModel):
    """Causal base RoBERTa (`is_decoder=True`) + decoder head: (vector, seed tokens) -> logits.

    Called as `model((vector, seed_tokens))` or `model(seed_tokens, vector=v)`.
    Legacy quirk kept: the base model uses the seed tokens' mask (when given as
    a dict), the decoder head gets none and attends in both directions.

    Args:
        base_model: a built `TFRobertaModel` whose config has `is_decoder=True`.
        **kwargs: passed to `keras.Model`.

    Raises:
        ValueError: if the base model is not a decoder.
    """

    def __init__(self, base_model, **kwargs):
        if not base_model.config.is_decoder:
            raise ValueError("QaracDecoderModel needs a base model built with is_decoder=True")
        super().__init__(base_model.config, **kwargs)
        self.decoder = base_model
        self.decoder_head = QaracDecoderHead(base_model.config, base_model.roberta.embeddings)

    def call(self, inputs, vector=None, training=False):
        """Args:
            inputs: `(vector, seed_tokens)`, or the seed tokens alone with `vector` given.
                Seed tokens: ids (B, T) or a dict of `input_ids`/`attention_mask`.
            vector: (B, H), when not in `inputs`.

        Returns:
            (B, T, V) logits.
        """
        if vector is None:
            vector, seed = inputs
        else:
            seed = inputs
        check_tokens(seed, self.config, "decoder seed tokens")
        hidden_states = self.decoder(seed, training=training).last_hidden_state  # (B, T, H)
        return self.decoder_head((vector, hidden_states), training=training)  # (B, T, V)

    def generate(self, vector, max_new_tokens: int = 20, seed_ids=None):
        """Greedy decoding from a vector, for reference comparisons.

        Starts from `seed_ids` (default `<s>` per row), appends the argmax token
        of the last position until every row has produced `</s>` or
        `max_new_tokens` tokens were added (always within the position table).

        Args:
            vector: (B, H).
            max_new_tokens: most tokens to add.
            seed_ids: optional (B, T0) int ids to start from.

        Returns:
            (B, T0 + n) int32 numpy array: the seed followed by the generated
            ids; after a row's `</s>` the row is filled with `pad_token_id`.
        """
        vector = tf.convert_to_tensor(vector, dtype=tf.float32)
        if vector.shape.rank != 2 or vector.shape[-1] != self.config.hidden_size:
            raise ValueError(f"generate expects a vector of shape (batch, {self.config.hidden_size}), got {vector.shape}")
        batch = int(vector.shape[0])
        if seed_ids is None:
            ids = np.full((batch, 1), self.config.bos_token_id, dtype=np.int32)
        else:
            ids = np.asarray(seed_ids, dtype=np.int32)
            check_tokens(ids, self.config, "generate seed_ids")
        room = max_tokens(self.config) - ids.shape[1]
        finished = np.zeros(batch, dtype=bool)
        for _ in range(max(0, min(max_new_tokens, room))):
            logits = self((vector, tf.constant(ids)), training=False)  # (B, T, V)
            next_ids = np.argmax(logits[:, -1].numpy(), axis=-1).astype(np.int32)
            next_ids = np.where(finished, self.config.pad_token_id, next_ids)
            ids = np.concatenate([ids, next_ids[:, None]], axis=1)
            finished |= next_ids == self.config.eos_token_id
            if finished.all():
                break
        return ids

    def get_config(self):
        return super().get_config()


class QaracTrainerModel(keras.Model):
    """The four training objectives of QARAC (docs/legacy.md §1.4).

    Holds `question_encoder` and `answer_encoder` (two encoders sharing one
    base model, each with its own pooling head), `decoder`, and `consistency`
    (a normalised dot product, i.e. cosine similarity).

    Inputs: a dict keyed by `TRAINER_INPUTS`, each value a dict of
    `input_ids`/`attention_mask` (B, T) int32.
    Outputs: a dict keyed by `TRAINER_OUTPUTS`:
        encode_decode (B, T, V) logits, question_answering (B, H),
        reasoning (B, T, V) logits, consistency (B, 1).

    Args:
        base_encoder_model: `TFRobertaModel` shared by both encoders.
        base_decoder_model: `TFRobertaModel` with `is_decoder=True`.
        fix_local_projection_gradient: passed to both pooling heads (off: faithful).
        **kwargs: passed to `keras.Model`.
    """

    def __init__(self, base_encoder_model, base_decoder_model, fix_local_projection_gradient: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.fix_local_projection_gradient = bool(fix_local_projection_gradient)
        self.question_encoder = QaracEncoderModel(base_encoder_model, fix_local_projection_gradient)
        self.answer_encoder = QaracEncoderModel(base_encoder_model, fix_local_projection_gradient)
        self.decoder = QaracDecoderModel(base_decoder_model)
        self.consistency = keras.layers.Dot(axes=1, normalize=True)

    def call(self, inputs, training=False):
        missing = [key for key in TRAINER_INPUTS if key not in inputs]
        if missing:
            raise ValueError(f"QaracTrainerModel inputs lack {missing}; expected the keys {list(TRAINER_INPUTS)}")
        encode_decode = self.decoder(
            (self.answer_encoder(inputs["all_text"], training=training), inputs["offset_text"]), training=training
        )  # (B, T, V)
        question_answering = self.question_encoder(inputs["question"], training=training) - self.answer_encoder(
            inputs["answer"], training=training
        )  # (B, H)
        reasoning = self.decoder(
            (
                self.answer_encoder(inputs["proposition0"], training=training)
                + self.answer_encoder(inputs["proposition1"], training=training),
                inputs["conclusion_offset"],
            ),
            training=training,
        )  # (B, T, V)
        consistency = self.consistency(
            [
                self.answer_encoder(inputs["statement0"], training=training),
                self.answer_encoder(inputs["statement1"], training=training),
            ]
        )  # (B, 1)
        return {
            "encode_decode": encode_decode,
            "question_answering": question_answering,
            "reasoning": reasoning,
            "consistency": consistency,
        }

    def get_config(self):
        # The base models are not serialisable as config; rebuild with legacy_keras.build.
        return {"name": self.name, "fix_local_projection_gradient": self.fix_local_projection_gradient}
