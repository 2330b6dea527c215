"""Keras 3 models of QARAC: encoder, decoder and the four-objective trainer.

Mirrors `legacy_keras/models.py`: the encoder and the decoder are *models*
(`keras.Model`, where the legacy had `TFPreTrainedModel`s) wrapping a RoBERTa base built
outside them, and the trainer is a `keras.Model` calling them, so gradients must cross
model boundaries exactly as in the original design.
"""

from __future__ import annotations

from keras3_qarac._keras import keras
from keras3_qarac.layers import GlobalAttentionPoolingHead, QaracDecoderHead

TRAINER_INPUTS = ("all_text", "offset_text", "question", "answer", "proposition0", "proposition1",
                  "conclusion_offset", "statement0", "statement1")
TRAINER_OUTPUTS = ("encode_decode", "question_answering", "reasoning", "consistency")


class QaracEncoderModel(keras.Model):
    """RoBERTa base + global attention pooling head: tokens (B, T) -> vector (B, H).

    The base gets the mask (inputs as a dict), the head does not (legacy quirk).

    Args:
        base_model: a `keras3_qarac.base.RobertaBase` (may be shared with another encoder).
        nested_tf_function: passed to the pooling head.
    """

    def __init__(self, base_model, nested_tf_function: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.encoder = base_model
        self.head = GlobalAttentionPoolingHead(nested_tf_function=nested_tf_function)

    def call(self, inputs, training=False):
        hidden_states = self.encoder(inputs, training=training)["last_hidden_state"]  # (B, T, H)
        return self.head(hidden_states)  # (B, H)


class QaracDecoderModel(keras.Model):
    """Causal RoBERTa base + decoder head: `(vector, seed_tokens)` -> logits (B, T, V).

    The base uses the seed tokens' mask, the head gets none (legacy quirk).

    Raises:
        ValueError: if the base model is not causal.
    """

    def __init__(self, base_model, **kwargs):
        if not base_model.is_decoder:
            raise ValueError("QaracDecoderModel needs a base model built with is_decoder=True")
        super().__init__(**kwargs)
        self.decoder = base_model
        self.decoder_head = QaracDecoderHead(base_model.config, base_model.backbone.token_embedding)

    def call(self, inputs, vector=None, training=False):
        if vector is None:
            vector, seed = inputs
        else:
            seed = inputs
        hidden_states = self.decoder(seed, training=training)["last_hidden_state"]  # (B, T, H)
        return self.decoder_head((vector, hidden_states), training=training)  # (B, T, V)


class QaracTrainerModel(keras.Model):
    """The four training objectives (the legacy `QaracTrainerModel`).

    Inputs: a dict keyed by `TRAINER_INPUTS`, each a dict of `input_ids`/`attention_mask` (B, T).
    Outputs: a dict keyed by `TRAINER_OUTPUTS`: encode_decode (B, T, V), question_answering (B, H),
    reasoning (B, T, V), consistency (B, 1).

    Args:
        base_encoder_model: the `RobertaBase` both encoders share.
        base_decoder_model: a causal `RobertaBase`.
        nested_tf_function: passed to both pooling heads.
    """

    def __init__(self, base_encoder_model, base_decoder_model, nested_tf_function: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.question_encoder = QaracEncoderModel(base_encoder_model, nested_tf_function, name="question_encoder")
        self.answer_encoder = QaracEncoderModel(base_encoder_model, nested_tf_function, name="answer_encoder")
        self.decoder = QaracDecoderModel(base_decoder_model, name="decoder")
        self.consistency = keras.layers.Dot(axes=1, normalize=True)

    def call(self, inputs, training=False):
        missing = [key for key in TRAINER_INPUTS if key not in inputs]
        if missing:
            raise ValueError(f"QaracTrainerModel inputs lack {missing}; expected the keys {list(TRAINER_INPUTS)}")
        encode_decode = self.decoder(
            (self.answer_encoder(inputs["all_text"], training=training), inputs["offset_text"]), training=training
        )  # (B, T, V)
        question_answering = self.question_encoder(inputs["question"], training=training) - self.answer_encoder(
            inputs["answer"], training=training)  # (B, H)
        reasoning = self.decoder(
            (self.answer_encoder(inputs["proposition0"], training=training)
             + self.answer_encoder(inputs["proposition1"], training=training), inputs["conclusion_offset"]),
            training=training)  # (B, T, V)
        consistency = self.consistency([self.answer_encoder(inputs["statement0"], training=training),
                                        self.answer_encoder(inputs["statement1"], training=training)])  # (B, 1)
        return {"encode_decode": encode_decode, "question_answering": question_answering,
                "reasoning": reasoning, "consistency": consistency}
