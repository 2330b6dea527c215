"""Keras 3 layers of QARAC: the encoders' pooling head, the decoder head and its LM head.

The legacy's layers (`legacy_keras/layers.py`) written for Keras 3 as its author would have:
`tf.*` calls become `keras.ops` calls (`tf.vectorized_map` -> `ops.vectorized_map`, which is
`tf.vectorized_map` on TensorFlow, `jax.vmap` on JAX and `torch.vmap` on PyTorch), the same
three vectorised maps, and the RoBERTa layers are keras-hub's `TransformerEncoder`. Quirks kept:
the head's global sum runs over padding, the head gets no mask from the encoder, the decoder
head's layers get no mask (they attend both ways).

`@tf.function` has no Keras 3 equivalent; on the TensorFlow backend the original's two
decorations (the projection method, the module-level `dot_prod`) are kept
(`nested_tf_function=True`, the default there), because a user moving the original to Keras 3
on TensorFlow could keep them; on the other backends there is nothing to decorate with.
"""

from __future__ import annotations

from keras3_qarac._keras import backend, keras, keras_hub, ops

# tf.math.l2_normalize's epsilon on the squared norm.
L2_EPSILON = 1e-12


def l2_normalize(x, axis):
    """TensorFlow's `l2_normalize`: x / sqrt(max(sum x², 1e-12)) along `axis`."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), L2_EPSILON))


def dot_prod(vectors):
    """One batch element's `tensordot(x, y, axes=1)`, the original's module-level helper."""
    x, y = vectors
    return ops.tensordot(x, y, axes=1)


def _tf_function(function):
    import tensorflow as tf

    return tf.function(function)


class GlobalAttentionPoolingHead(keras.layers.Layer):
    """Pools the base model's vectors (B, T, H) into one vector per text (B, H).

        g   = (sum_i X_i) . G
        a_i = cos(X_i . L, g)
        E   = sum_i (a_i * m_i) X_i

    Mirrors `legacy_keras.layers.GlobalAttentionPoolingHead`: variables `global projection`
    and `local projection` (H_in, H_out), three `vectorized_map`s.

    Args:
        nested_tf_function: TensorFlow backend only: map the `@tf.function`-decorated
            projection and `dot_prod`, as the original (see the module docstring). Ignored
            (there is no tf.function) on the other backends.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, nested_tf_function: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.nested_tf_function = bool(nested_tf_function) and backend() == "tensorflow"
        self.global_projection = None
        self.local_projection = None
        self._project_local = _tf_function(self._project) if self.nested_tf_function else self._project
        self._dot_prod = _tf_function(dot_prod) if self.nested_tf_function else dot_prod

    def build(self, input_shape):
        """Creates G and L, both (H_in, H_out) with H_out = H_in, Keras' default initializer."""
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"GlobalAttentionPoolingHead expects (batch, tokens, hidden) with a known hidden "
                             f"size, got shape {input_shape}")
        width = int(input_shape[-1])
        self.global_projection = self.add_weight(name="global projection", shape=(width, width))
        self.local_projection = self.add_weight(name="local projection", shape=(width, width))

    def _project(self, X):
        """(T, H) -> (T, H): one batch element's vectors times L."""
        return ops.tensordot(X, self.local_projection, axes=1)

    def call(self, X, attention_mask=None):
        """Pools X (B, T, H) to (B, H); `attention_mask` (B, T) is used in the final sum only."""
        if attention_mask is None:
            attention_mask = ops.ones(ops.shape(X)[:2], dtype=X.dtype)  # (B, T)
        else:
            attention_mask = ops.cast(attention_mask, X.dtype)
        global_vector = ops.tensordot(ops.sum(X, axis=1), self.global_projection, axes=1)  # (B, H)
        global_vector = l2_normalize(global_vector, 1)
        local_vectors = ops.vectorized_map(self._project_local, X)  # (B, T, H)
        local_vectors = l2_normalize(local_vectors, 2)
        attention = ops.vectorized_map(self._dot_prod, (local_vectors, global_vector))  # (B, T)
        return ops.vectorized_map(self._dot_prod, (attention * attention_mask, X))  # (B, H)

    def compute_output_shape(self, input_shape):
        # Keras' symbolic build pass would otherwise trace `call`, and `torch.vmap` refuses its
        # random placeholder inputs (the layer builds on its first real call either way).
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "nested_tf_function": self.nested_tf_function}


class RobertaLMHead(keras.layers.Layer):
    """HF's RoBERTa LM head (`TFRobertaLMHead`): dense, GELU, layer norm, then logits through the
    decoder base's word embeddings (tied) plus its own bias. (B, T, H) -> (B, T, V).

    Args:
        config: the RoBERTa config dict (`keras3_qarac.base.roberta_config`).
        input_embeddings: the decoder base's keras-hub `ReversibleEmbedding`, whose matrix is shared.
    """

    def __init__(self, config, input_embeddings, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(config)
        self.dense = keras.layers.Dense(config["hidden_size"], activation="gelu", name="dense")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=float(config["layer_norm_eps"]), name="layer_norm")
        self.input_embeddings = input_embeddings
        self.bias = None

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.config["vocab_size"],), initializer="zeros")

    def call(self, hidden_states):
        x = self.layer_norm(self.dense(hidden_states))  # (B, T, H)
        return ops.matmul(x, ops.transpose(self.input_embeddings.embeddings)) + self.bias  # (B, T, V)


class QaracDecoderHead(keras.layers.Layer):
    """A vector (B, H) and the decoder base's states (B, T, H) -> logits (B, T, V).

    Mirrors `legacy_keras.layers.QaracDecoderHead`: prepend the vector, `layer_0`, drop
    position 0, `layer_1` (keras-hub `TransformerEncoder`s, RoBERTa's post-norm GELU layer),
    `head` (the LM head tied to the decoder base's word embeddings). No mask (legacy quirk).
    """

    def __init__(self, config, input_embeddings, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(config)

        def roberta_layer(name):
            return keras_hub.layers.TransformerEncoder(
                intermediate_dim=config["intermediate_size"], num_heads=config["num_attention_heads"],
                dropout=config["hidden_dropout_prob"], activation="gelu",
                layer_norm_epsilon=float(config["layer_norm_eps"]), name=name)

        self.layer_0 = roberta_layer("layer_0")
        self.layer_1 = roberta_layer("layer_1")
        self.head = RobertaLMHead(config, input_embeddings, name="head")

    def call(self, inputs, training=False):
        """Args:
            inputs: `(vector, hidden_states)`, (B, H) and (B, T, H).

        Returns:
            (B, T, V) logits.
        """
        vector, hidden_states = inputs
        sequence = ops.concatenate([ops.expand_dims(vector, 1), hidden_states], axis=1)  # (B, T+1, H)
        layer_0_out = self.layer_0(sequence, training=training)  # (B, T+1, H)
        dropped = layer_0_out[:, 1:]  # (B, T, H)
        layer_1_out = self.layer_1(dropped, training=training)  # (B, T, H)
        return self.head(layer_1_out)  # (B, T, V)
