"""The Keras 3 weight map as data: every port parameter has a Keras home, both directions agree."""

import numpy as np
import pytest

from keras3_qarac.weights import WeightMapError, keras_path, to_keras, to_port


def test_every_port_parameter_has_a_keras_path(tiny_model_dir):
    from keras3_helpers import port_reference

    names = port_reference(tiny_model_dir).parameters
    paths = {name: keras_path(name) for name in names}
    assert all(paths.values()), [name for name, path in paths.items() if not path]
    assert len(set(paths.values())) == len(names)  # one variable per parameter
    assert paths["decoder.decoder_head.layer_1.attention.self.query.weight"] == \
        "decoder.decoder_head.layer_1._self_attention_layer.query_dense.kernel"
    assert paths["question_encoder.encoder.encoder.layer.1.output.LayerNorm.bias"] == \
        "question_encoder.encoder.backbone.transformer_layers.1._feedforward_layer_norm.beta"


def test_tied_parameters_have_no_variable_of_their_own():
    assert keras_path("decoder.decoder_head.head.decoder.weight") is None
    assert keras_path("decoder.decoder_head.head.decoder.bias") is None


def test_an_unmapped_name_is_an_error_naming_it():
    with pytest.raises(WeightMapError, match="question_encoder.head.mystery"):
        keras_path("question_encoder.head.mystery")


@pytest.mark.parametrize("name, pt_shape, keras_shape", [
    ("decoder.decoder.encoder.layer.0.attention.self.query.weight", (32, 32), (32, 4, 8)),  # (out, in) -> (in, heads, hd)
    ("decoder.decoder.encoder.layer.0.attention.self.key.bias", (32,), (4, 8)),
    ("decoder.decoder.encoder.layer.0.attention.output.dense.weight", (32, 32), (4, 8, 32)),
    ("decoder.decoder.encoder.layer.0.intermediate.dense.weight", (37, 32), (32, 37)),
    ("question_encoder.head.local_projection", (32, 32), (32, 32)),  # X @ L on both sides: not transposed
])
def test_layouts_round_trip(name, pt_shape, keras_shape):
    value = np.random.default_rng(0).standard_normal(pt_shape).astype(np.float32)
    keras_value = to_keras(value, name, keras_shape)
    assert keras_value.shape == keras_shape
    np.testing.assert_array_equal(to_port(keras_value, name, pt_shape), value)


def test_query_kernel_layout_against_the_formula():
    """x @ kernel in keras-hub's (in, heads, head_dim) layout is torch's x @ W.T, head by head."""
    rng = np.random.default_rng(1)
    weight, x = rng.standard_normal((32, 32)), rng.standard_normal(32)
    kernel = to_keras(weight, "a.attention.self.query.weight", (32, 4, 8))
    np.testing.assert_allclose(np.einsum("i,ihd->hd", x, kernel).reshape(32), weight @ x, rtol=1e-12)
    projection = to_keras(weight, "question_encoder.head.local_projection", (32, 32))
    np.testing.assert_array_equal(projection, weight)


def test_a_wrong_size_is_an_error_naming_the_parameter():
    with pytest.raises(WeightMapError, match="intermediate.dense.weight"):
        to_keras(np.zeros((37, 32)), "x.intermediate.dense.weight", (32, 36))
