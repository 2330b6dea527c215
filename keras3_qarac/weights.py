"""The weight map: canonical PyTorch parameter names of the port <-> Keras 3 QARAC variables.

Data, as torchtune's `convert_weights.py`: tables from the port's names to attribute paths
in the Keras 3 model, `{}` for layer numbers, `None` for weights with no variable of their
own (tied), and the explicit set of weights that are transposed. keras-hub's attention
kernels are (H, heads, head_dim) / (heads, head_dim, H): a weight is transposed (when listed)
then reshaped to the variable's shape, the sizes asserted. The reverse direction (gradients
back to PyTorch names) is derived from the same tables, never written twice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# Inside one RoBERTa layer: HF name -> keras-hub `TransformerEncoder` attribute path.
LAYER_TABLE: dict[str, str] = {
    "attention.self.query.weight": "_self_attention_layer.query_dense.kernel",
    "attention.self.query.bias": "_self_attention_layer.query_dense.bias",
    "attention.self.key.weight": "_self_attention_layer.key_dense.kernel",
    "attention.self.key.bias": "_self_attention_layer.key_dense.bias",
    "attention.self.value.weight": "_self_attention_layer.value_dense.kernel",
    "attention.self.value.bias": "_self_attention_layer.value_dense.bias",
    "attention.output.dense.weight": "_self_attention_layer.output_dense.kernel",
    "attention.output.dense.bias": "_self_attention_layer.output_dense.bias",
    "attention.output.LayerNorm.weight": "_self_attention_layer_norm.gamma",
    "attention.output.LayerNorm.bias": "_self_attention_layer_norm.beta",
    "intermediate.dense.weight": "_feedforward_intermediate_dense.kernel",
    "intermediate.dense.bias": "_feedforward_intermediate_dense.bias",
    "output.dense.weight": "_feedforward_output_dense.kernel",
    "output.dense.bias": "_feedforward_output_dense.bias",
    "output.LayerNorm.weight": "_feedforward_layer_norm.gamma",
    "output.LayerNorm.bias": "_feedforward_layer_norm.beta",
}

# Inside one RoBERTa base: HF name -> `keras3_qarac.base.RobertaBase` attribute path.
BASE_TABLE: dict[str, str] = {
    "embeddings.word_embeddings.weight": "backbone.token_embedding.embeddings",
    "embeddings.position_embeddings.weight": "backbone.embeddings.position_embedding.position_embeddings",
    "embeddings.token_type_embeddings.weight": "token_type_embeddings",
    "embeddings.LayerNorm.weight": "backbone.embeddings_layer_norm.gamma",
    "embeddings.LayerNorm.bias": "backbone.embeddings_layer_norm.beta",
    **{f"encoder.layer.{{}}.{hf}": f"backbone.transformer_layers.{{}}.{keras}" for hf, keras in LAYER_TABLE.items()},
    "pooler.dense.weight": "pooler.kernel",
    "pooler.dense.bias": "pooler.bias",
}

# Inside the LM head: port name -> `keras3_qarac.layers.RobertaLMHead` attribute path.
LM_HEAD_TABLE: dict[str, str | None] = {
    "dense.weight": "dense.kernel",
    "dense.bias": "dense.bias",
    "layer_norm.weight": "layer_norm.gamma",
    "layer_norm.bias": "layer_norm.beta",
    "bias": "bias",
    "decoder.weight": None,  # tied to the decoder base's word embeddings
    "decoder.bias": None,  # tied to `bias`
}

# (port prefix, Keras prefix, inner table). The answer encoder's base is the question
# encoder's (shared) on both sides, so it appears once.
COMPONENTS: tuple[tuple[str, str, Mapping[str, str | None]], ...] = (
    ("question_encoder.encoder.", "question_encoder.encoder.", BASE_TABLE),
    ("question_encoder.head.", "question_encoder.head.", {"global_projection": "global_projection",
                                                          "local_projection": "local_projection"}),
    ("answer_encoder.head.", "answer_encoder.head.", {"global_projection": "global_projection",
                                                      "local_projection": "local_projection"}),
    ("decoder.decoder.", "decoder.decoder.", BASE_TABLE),
    ("decoder.decoder_head.layer_{}.", "decoder.decoder_head.layer_{}.", LAYER_TABLE),
    ("decoder.decoder_head.head.", "decoder.decoder_head.head.", LM_HEAD_TABLE),
)

# Torch Linear weights are (out, in), Keras kernels (in, out): these are transposed. The
# pooling projections are `X @ G` on both sides and are not.
TRANSPOSED = re.compile(r"(query|key|value|dense)\.weight$")


class WeightMapError(ValueError):
    """A weight could not be mapped or copied; the message names it."""


def _regex(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)") + "$")


def keras_path(pt_name: str) -> str | None:
    """The Keras attribute path of a port parameter (None: tied, no variable of its own).

    Raises:
        WeightMapError: a name no table covers.
    """
    for pt_prefix, keras_prefix, table in COMPONENTS:
        for pt_inner, keras_inner in table.items():
            match = _regex(pt_prefix + pt_inner).match(pt_name)
            if match:
                if keras_inner is None:
                    return None
                return (keras_prefix + keras_inner).format(*match.groups())
    raise WeightMapError(f"no Keras 3 variable is mapped for port parameter {pt_name!r} (keras3_qarac.weights)")


def resolve(root: Any, path: str) -> Any:
    """`a.b.0.c` -> root.a.b[0].c."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def to_keras(value: np.ndarray, pt_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A port parameter in the Keras variable's layout: transposed if listed, reshaped, size asserted."""
    value = np.asarray(value)
    if TRANSPOSED.search(pt_name):
        value = value.T
    if value.size != int(np.prod(shape)):
        raise WeightMapError(f"{pt_name}: port shape {value.shape} does not fit Keras variable shape {shape}")
    return np.ascontiguousarray(value.reshape(shape))


def to_port(value: np.ndarray, pt_name: str, pt_shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `to_keras`: a Keras-layout array (a value or gradient) in the port's layout."""
    value = np.asarray(value)
    transposed = TRANSPOSED.search(pt_name) is not None
    flat_shape = tuple(reversed(pt_shape)) if transposed else tuple(pt_shape)
    if value.size != int(np.prod(flat_shape)):
        raise WeightMapError(f"{pt_name}: Keras shape {value.shape} does not fit port shape {pt_shape}")
    value = value.reshape(flat_shape)
    return np.ascontiguousarray(value.T if transposed else value)


def variable_map(trainer: Any, pt_names) -> dict[str, Any]:
    """Port name -> the Keras variable holding it (tied names left out); every variable of the trainer
    must be claimed exactly once.

    Raises:
        WeightMapError: a path that does not resolve, or trainer variables no port name claims.
    """
    mapping = {}
    for name in pt_names:
        path = keras_path(name)
        if path is None:
            continue
        try:
            mapping[name] = resolve(trainer, path)
        except (AttributeError, IndexError) as error:
            raise WeightMapError(f"{name} -> {path}: {error}") from None
    claimed = {id(v) for v in mapping.values()}
    unclaimed = [v.path for v in trainer.weights if id(v) not in claimed]
    if unclaimed:
        raise WeightMapError(f"Keras 3 variables no port parameter maps to: {unclaimed}")
    return mapping


def set_weights(trainer: Any, weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Copy every port parameter into the Keras 3 trainer (strict). Returns `variable_map`."""
    mapping = variable_map(trainer, weights)
    for name, variable in mapping.items():
        variable.assign(to_keras(weights[name], name, tuple(variable.shape)))
    return mapping


def gradients_by_pt_name(mapping: Mapping[str, Any], grads: Mapping[int, Any],
                         pt_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray | None]:
    """Gradients keyed by `id(variable)` (None: no gradient) -> keyed by port name, in the port's layout."""
    result = {}
    for name, variable in mapping.items():
        grad = grads.get(id(variable))
        result[name] = None if grad is None else to_port(np.asarray(grad, dtype=np.float32), name, pt_shapes[name])
    return result


def load_base_weights(base: Any, model_dir: Path) -> None:
    """Load an HF RoBERTa directory's `model.safetensors` into a `RobertaBase` (strict: every tensor of
    `BASE_TABLE` present with its shape, nothing else; a `roberta.` prefix is accepted).

    Raises:
        FileNotFoundError: no model.safetensors. WeightMapError: a missing, unexpected or misshapen tensor.
    """
    from safetensors.numpy import load_file

    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no model.safetensors (pickled weights are never loaded)")
    tensors = {name.removeprefix("roberta."): value for name, value in load_file(str(path)).items()}
    expected = {}
    for pt_inner, keras_inner in BASE_TABLE.items():
        if "{}" in pt_inner:
            for index in range(base.config["num_hidden_layers"]):
                expected[pt_inner.format(index)] = keras_inner.format(index)
        else:
            expected[pt_inner] = keras_inner
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightMapError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}")
    for name, keras_inner in expected.items():
        variable = resolve(base, keras_inner)
        variable.assign(to_keras(tensors[name], name, tuple(variable.shape)))

