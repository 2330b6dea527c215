"""Keras layers of the legacy QARAC: the encoders' pooling head and the decoder head.

Faithful to the original Keras implementation (docs/legacy.md section 1), quirks kept.
The PyTorch port mirrors these classes in `qarac/heads.py` and `qarac/decoder.py`
under the same names, with the same sublayer names so weight paths line up.
"""

from __future__ import annotations

from legacy_keras._tf import TFRobertaLayer, TFRobertaLMHead, keras, tf


@tf.function
def dot_prod(vectors):
    """One batch element's `tensordot(x, y, axes=1)`, the original's module-level helper.

    The legacy maps it over the batch with `tf.vectorized_map` twice (docs/legacy.md §1.1):
    for the attention weights, `x` the local vectors (T, H) and `y` the global
    vector (H,), giving (T,); for the pooled output, `x` the masked attention
    weights (T,) and `y` the base model's vectors (T, H), giving (H,).

    Args:
        vectors: a pair `(x, y)` whose last / first axes match.

    Returns:
        `x . y` contracted over one axis.
    """
    x, y = vectors
    return tf.tensordot(x, y, axes=1)


class GlobalAttentionPoolingHead(keras.layers.Layer):
    """Pools the base model's vectors (B, T, H) into one vector per text (B, H).

        g   = (sum_i X_i) . G
        a_i = cos(X_i . L, g)
        E   = sum_i (a_i * m_i) X_i

    Legacy quirks kept: the global sum runs over every position, padding
    included; the legacy encoder never passes `attention_mask` (so `m` is all
    ones); three `tf.vectorized_map` calls, as the original: `L` through the
    `@tf.function`-decorated method `project_local`, which under graph
    execution (`tf.function`, `fit`) loses the local projection's gradient
    (see legacy_keras/README.md), then the attention dot products and the
    weighted sum, both through the module-level `@tf.function` `dot_prod`.

    Args:
        fix_local_projection_gradient: apply `L` through the undecorated
            method instead, the smallest change after which its gradient flows
            in every execution mode. Off by default: the faithful legacy.
        **kwargs: passed to `keras.layers.Layer` (e.g. `name`).
    """

    def __init__(self, fix_local_projection_gradient: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fix_local_projection_gradient = bool(fix_local_projection_gradient)
        self.global_projection = None
        self.local_projection = None

    def build(self, input_shape):
        """Creates G and L, both (H_in, H_out) with H_out = H_in, default initializer."""
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 3 or input_shape[-1] is None:
            raise ValueError(
                f"GlobalAttentionPoolingHead expects vectors of shape (batch, tokens, hidden) "
                f"with a known hidden size, got shape {input_shape}"
            )
        width = int(input_shape[-1])
        self.global_projection = self.add_weight("global projection", shape=(width, width))
        self.local_projection = self.add_weight("local projection", shape=(width, width))
        super().build(input_shape)

    def _project(self, X):
        """(T, H) -> (T, H): one batch element's vectors times L."""
        return tf.tensordot(X, self.local_projection, axes=1)

    @tf.function
    def project_local(self, X):
        """The legacy's `@tf.function`-decorated projection, mapped over the batch."""
        return self._project(X)

    def call(self, X, attention_mask=None, training=None):
        """Pools X (B, T, H) to (B, H).

        Args:
            X: (B, T, H) the base model's last hidden state.
            attention_mask: optional (B, T), 1 for tokens and 0 for padding;
                used only in the final weighted sum (the legacy passes none).
            training: unused.

        Raises:
            ValueError: if X is not of rank 3 or the mask does not match it.
        """
        if X.shape.rank != 3:
            raise ValueError(f"GlobalAttentionPoolingHead expects (batch, tokens, hidden), got shape {X.shape}")
        if attention_mask is None:
            attention_mask = tf.ones(tf.shape(X)[:2], dtype=X.dtype)  # (B, T)
        else:
            attention_mask = tf.cast(attention_mask, X.dtype)
            if attention_mask.shape.rank != 2:
                raise ValueError(f"attention_mask must be (batch, tokens), got shape {attention_mask.shape}")
        global_vector = tf.tensordot(tf.reduce_sum(X, axis=1), self.global_projection, axes=1)  # (B, H)
        global_vector = tf.linalg.l2_normalize(global_vector, axis=1)
        project = self._project if self.fix_local_projection_gradient else self.project_local
        local_vectors = tf.vectorized_map(project, X)  # (B, T, H)
        local_vectors = tf.linalg.l2_normalize(local_vectors, axis=2)
        attention = tf.vectorized_map(dot_prod, (local_vectors, global_vector))  # (B, T)
        return tf.vectorized_map(dot_prod, (attention * attention_mask, X))  # (B, H)

    def get_config(self):
        config = super().get_config()
        config["fix_local_projection_gradient"] = self.fix_local_projection_gradient
        return config


class QaracDecoderHead(keras.layers.Layer):
    """Turns a vector (B, H) and the decoder base's states (B, T, H) into logits (B, T, V).

    1. prepend the vector as position 0: (B, T+1, H);
    2. `layer_0`, a RoBERTa transformer layer;
    3. drop position 0: (B, T, H);
    4. `layer_1`, a second RoBERTa transformer layer;
    5. `head`, RoBERTa's LM head, its output matrix tied to `input_embeddings`.

    Legacy quirk kept: the layers get no attention mask unless one is passed
    (the legacy passes none), so they attend in both directions and, under
    teacher forcing, position t sees the base model's state at t+1.

    Args:
        config: the decoder base model's `RobertaConfig` (`is_decoder=True`).
        input_embeddings: the decoder base model's `TFRobertaEmbeddings`, whose
            word-embedding matrix the LM head shares.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, config, input_embeddings, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer_0 = TFRobertaLayer(config, name="layer_0")
        self.layer_1 = TFRobertaLayer(config, name="layer_1")
        self.head = TFRobertaLMHead(config, input_embeddings, name="head")

    def build(self, input_shape=None):
        if self.built:
            return
        for layer in (self.layer_0, self.layer_1, self.head):
            with tf.name_scope(layer.name):
                layer.build(None)
        super().build(input_shape)

    def call(self, inputs, attention_mask=None, training=False):
        """Args:
            inputs: a pair `(vector, hidden_states)` of shapes (B, H) and (B, T, H).
            attention_mask: optional additive mask broadcastable to
                (B, heads, T+1, T+1) for `layer_0` (the legacy passes none);
                when given, its last row/column block without position 0 is
                used for `layer_1`.
            training: enables dropout.

        Returns:
            (B, T, V) logits.

        Raises:
            ValueError: on shapes that do not fit together.
        """
        vector, hidden_states = inputs
        if vector.shape.rank != 2 or hidden_states.shape.rank != 3:
            raise ValueError(
                "QaracDecoderHead expects (vector (batch, hidden), states (batch, tokens, hidden)), "
                f"got shapes {vector.shape} and {hidden_states.shape}"
            )
        hidden = self.config.hidden_size
        if vector.shape[-1] not in (None, hidden) or hidden_states.shape[-1] not in (None, hidden):
            raise ValueError(
                f"QaracDecoderHead expects hidden size {hidden}, got vector {vector.shape} "
                f"and states {hidden_states.shape}"
            )
        sequence = tf.concat([tf.expand_dims(vector, axis=1), hidden_states], axis=1)  # (B, T+1, H)
        mask_1 = None if attention_mask is None else attention_mask[..., 1:, 1:]
        layer_0_out = self.layer_0(sequence, attention_mask, None, None, None, None, False, training=training)
        dropped = layer_0_out[0][:, 1:]  # (B, T, H)
        layer_1_out = self.layer_1(dropped, mask_1, None, None, None, None, False, training=training)
        return self.head(layer_1_out[0])  # (B, T, V)

    def get_config(self):
        config = super().get_config()
        config["config"] = self.config.to_dict()
        return config
