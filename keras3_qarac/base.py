"""The RoBERTa base of Keras 3 QARAC: keras-hub's `RobertaBackbone`, used as HF's RoBERTa is.

`RobertaBase` plays the part `TFRobertaModel` plays in the legacy: a model built outside
the QARAC models and handed to them (one shared by both encoders, one causal for the
decoder), returning `last_hidden_state` and `pooler_output`. Its layers are keras-hub's
(`RobertaBackbone`: token and position embedding, embedding layer norm, `TransformerEncoder`
layers), run one by one rather than through the backbone's own functional graph, because
HF's RoBERTa, which the legacy ran, differs from that graph in four ways that matter
here (the first three change QARAC's numbers, the last its gradient census):

- positions: HF numbers real tokens from `pad_token_id + 1` and gives every padding token
  the position `pad_token_id`; the backbone numbers every position 0..T-1. The legacy's
  pooling head reads padding positions (it never gets the mask), so they matter. The
  backbone is built with HF's whole position table (`max_position_embeddings` rows) and
  given HF's position ids.
- token types: HF adds `token_type_embeddings[0]` to every token; keras-hub has no token
  types (its converter drops the tensor). Kept here as `token_type_embeddings`.
- the decoder base: HF's `is_decoder=True` makes self-attention causal; the backbone has
  no causal switch. Each layer gets a causal `attention_mask` beside the padding mask.
- the pooler: HF's `TFRobertaModel` computes `pooler_output` (dense + tanh on the first
  token) on every call, and QARAC never uses it. Kept here, as `pooler`, so that Keras 3
  meets the same dead parameters the legacy did.
"""

from __future__ import annotations

from typing import Any, Mapping

from keras3_qarac._keras import keras, keras_hub, ops


def roberta_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The HF `config.json` fields this package reads, checked.

    Raises:
        ValueError: not a RoBERTa config, or a field missing.
    """
    if config.get("model_type") != "roberta":
        raise ValueError(f"expected a RoBERTa config (model_type 'roberta'), got {config.get('model_type')!r}")
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "pad_token_id", "layer_norm_eps", "hidden_dropout_prob", "type_vocab_size")
    missing = [key for key in keys if key not in config]
    if missing:
        raise ValueError(f"RoBERTa config lacks {missing}")
    if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only hidden_act 'gelu' and absolute position embeddings are supported, got "
                         f"{config.get('hidden_act')!r} / {config.get('position_embedding_type')!r}")
    return {key: config[key] for key in keys} | {"bos_token_id": config.get("bos_token_id", 0),
                                                  "eos_token_id": config.get("eos_token_id", 2)}


def hf_position_ids(input_ids, pad_token_id: int):
    """HF RoBERTa's position ids (B, T): real tokens count from pad_token_id + 1, padding gets pad_token_id."""
    mask = ops.cast(ops.not_equal(input_ids, pad_token_id), "int32")  # (B, T)
    return ops.cumsum(mask, axis=1) * mask + pad_token_id  # (B, T)


def causal_mask(input_ids):
    """(B, T, T) int32: query t may attend to keys 0..t (HF's `is_decoder=True`)."""
    length = ops.shape(input_ids)[1]
    lower = ops.tril(ops.ones((length, length), dtype="int32"))  # (T, T)
    return ops.broadcast_to(lower[None], (ops.shape(input_ids)[0], length, length))  # (B, T, T)


class RobertaBase(keras.Model):
    """HF's RoBERTa base (`TFRobertaModel` in the legacy) on keras-hub's `RobertaBackbone`.

    Args:
        config: an HF RoBERTa `config.json` as a dict.
        is_decoder: causal self-attention, as HF's `is_decoder=True`.
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init__(self, config: Mapping[str, Any], is_decoder: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.config = roberta_config(config)
        self.is_decoder = bool(is_decoder)
        c = self.config
        self.backbone = keras_hub.models.RobertaBackbone(
            vocabulary_size=c["vocab_size"], num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
            hidden_dim=c["hidden_size"], intermediate_dim=c["intermediate_size"], dropout=c["hidden_dropout_prob"],
            # HF's whole table: position ids are HF's (see the module docstring), not 0..T-1.
            max_sequence_length=c["max_position_embeddings"], name="backbone")
        for norm in self._layer_norms():  # keras-hub fixes 1e-5; HF reads it from the config
            norm.epsilon = float(c["layer_norm_eps"])
        self.token_type_embeddings = self.add_weight(
            name="token_type_embeddings", shape=(c["type_vocab_size"], c["hidden_size"]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.pooler = keras.layers.Dense(c["hidden_size"], activation="tanh", name="pooler")

    def _layer_norms(self):
        yield self.backbone.embeddings_layer_norm
        for layer in self.backbone.transformer_layers:
            yield layer._self_attention_layer_norm
            yield layer._feedforward_layer_norm

    def embed(self, input_ids, training=False):
        """(B, T) ids -> (B, T, H): word + token type + position embeddings, layer norm, dropout."""
        positions = hf_position_ids(input_ids, self.config["pad_token_id"])  # (B, T)
        x = self.backbone.embeddings(input_ids, positions=positions)  # (B, T, H) word + position
        x = x + self.token_type_embeddings[0]  # token type 0 everywhere, as HF without token_type_ids
        x = self.backbone.embeddings_layer_norm(x)
        return self.backbone.embeddings_dropout(x, training=training)

    def call(self, inputs, training=False):
        """Args:
            inputs: token ids (B, T) or a dict of `input_ids`/`attention_mask` (B, T).

        Returns:
            dict with `last_hidden_state` (B, T, H) and `pooler_output` (B, H).
        """
        if isinstance(inputs, Mapping):
            input_ids, padding_mask = inputs["input_ids"], inputs.get("attention_mask")
        else:
            input_ids, padding_mask = inputs, None
        if padding_mask is None:
            padding_mask = ops.ones_like(input_ids)
        attention_mask = causal_mask(input_ids) if self.is_decoder else None
        x = self.embed(input_ids, training=training)
        for layer in self.backbone.transformer_layers:
            x = layer(x, padding_mask=padding_mask, attention_mask=attention_mask, training=training)  # (B, T, H)
        pooled = self.pooler(x[:, 0])  # (B, H): computed, as HF does, and never used by QARAC
        return {"last_hidden_state": x, "pooler_output": pooled}
