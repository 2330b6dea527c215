"""The Keras runner: the original run on a pair's batches, every result kept as data (`KerasRun`).

The only module of the core that imports TensorFlow. Stages are the layers' own outputs, taken in
the same call as the model's outputs: a probe model over the original's graph
(`Model(model.inputs, [layer outputs] + model.outputs)`), so what is compared is what the original
computed in its own forward. The float64 model is the spec's float64 build holding the float32
model's weights, converted. Gradients are taken per execution mode (the eager tape, the same step
traced by `tf.function`), a variable the tape gives no gradient recorded as None, never as zeros.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from parity.core.batches import permutation, permuted, unpermuted
from parity.core.results import FLOAT32, FLOAT64, PERMUTED, KerasRun, StageSite, Values
from parity.core.spec import EAGER, GRAPH, Pair
from parity.core.stage_table import stage_sites
from parity.core.weights import Matched


def variable_name(variable: Any) -> str:
    """A Keras variable's name without TensorFlow's `:0` suffix (`lstm/lstm_cell/kernel`)."""
    return re.sub(r":\d+$", "", variable.name)


def variables(model: Any) -> dict[str, Any]:
    """Every variable of a built model by name; two of one name would make the map ambiguous."""
    result = {}
    for variable in model.weights:
        name = variable_name(variable)
        if name in result:
            raise ValueError(f"the Keras model holds two variables named {name!r}: name its layers")
        result[name] = variable
    return result


def versions() -> dict[str, str]:
    import tensorflow as tf

    found = {"tensorflow": tf.__version__}
    for package in ("tf_keras", "keras"):
        try:
            found[package] = __import__(package).__version__
        except ImportError:
            pass
    return found


def _model_class(model: Any):
    import tf_keras

    if isinstance(model, tf_keras.Model):
        return tf_keras.Model
    import keras

    return keras.Model


def probe_model(model: Any, stages: list[StageSite]) -> tuple[Any, list[str]]:
    """A model over the original's graph returning every stage's output, then every model output.

    Returns: (the probe, the model's output names).
    """
    if not hasattr(model, "inputs") or model.inputs is None:
        raise ValueError("the Keras model must be functional or Sequential (built on an Input): its layers' "
                         "outputs are read from its graph")
    layers = {layer.name: layer for layer in model.layers}
    missing = [stage.keras for stage in stages if stage.keras not in layers]
    if missing:
        raise ValueError(f"the Keras model has no layer {missing[0]!r} (a stage names it); layers: {sorted(layers)}")
    outputs = list(model.outputs)
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(outputs))])
    if len(outputs) == 1:
        names = ["output"]
    probe = _model_class(model)(model.inputs, [layers[stage.keras].output for stage in stages] + outputs)
    return probe, names


def _split(values: list[Any], stages: list[StageSite], outputs: list[str]) -> Values:
    named = {f"stage:{stage.name}": value for stage, value in zip(stages, values)}
    named.update({f"output:{name}": value for name, value in zip(outputs, values[len(stages):])})
    return named


def _inputs(model: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The batch by the model's input names; float inputs in the model's own float dtype."""
    tensors = {tensor.name.split(":")[0]: tensor for tensor in model.inputs}
    unknown = sorted(set(arrays) - set(tensors))
    if unknown:
        raise ValueError(f"batch inputs {unknown} are not inputs of the Keras model (its inputs: {list(tensors)})")
    return {name: np.asarray(arrays[name], dtype=tensor.dtype.as_numpy_dtype) if tensor.dtype.is_floating
            else arrays[name] for name, tensor in tensors.items()}


def forward(probe: Any, stages: list[StageSite], outputs: list[str], arrays: Mapping[str, np.ndarray]) -> Values:
    """Every stage and output of one forward (inference mode), as numpy."""
    values = probe(_inputs(probe, arrays), training=False)
    return {name: np.asarray(value) for name, value in _split(list(values), stages, outputs).items()}


def gradients(pair: Pair, probe: Any, stages: list[StageSite], outputs: list[str], arrays, targets,
              mode: str) -> dict[str, np.ndarray | None]:
    """d loss / d every trainable variable in one execution mode; None where the tape gives none."""
    import tensorflow as tf

    trainable = probe.trainable_variables

    def step(inputs, goals):
        with tf.GradientTape() as tape:
            named = _split(list(probe(inputs, training=False)), stages, outputs)
            loss = pair.keras_loss({k[len("output:"):]: v for k, v in named.items() if k.startswith("output:")}, goals)
        return tape.gradient(loss, trainable)

    run = tf.function(step) if mode == GRAPH else step
    found = run(_inputs(probe, arrays), dict(targets))
    return {variable_name(v): None if g is None else np.asarray(tf.convert_to_tensor(g))
            for v, g in zip(trainable, found)}


def build_pair(pair: Pair, matched_with: Any) -> tuple[Any, Any, Matched]:
    """The float32 and float64 Keras models holding the same weights, and the weight map applied.

    Args:
        matched_with: torch key -> shape of the port (the map is checked against both sides).
    """
    import tf_keras

    tf_keras.utils.set_random_seed(pair.seed)
    model32 = pair.build_keras("float32")
    model64 = pair.build_keras("float64")
    shapes32 = {name: tuple(v.shape) for name, v in variables(model32).items()}
    if list(shapes32.values()) != [tuple(v.shape) for v in variables(model64).values()]:
        raise ValueError("the float64 Keras build holds other variables than the float32 one")
    model64.set_weights([w.astype(np.float64) for w in model32.get_weights()])
    matched = pair.weights.match(shapes32, matched_with)
    return model32, model64, matched


def record(pair: Pair, torch_shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> KerasRun:
    """Run the original on every batch of `pair`: float32, float64, permuted rows; gradients per mode."""
    model32, model64, matched = build_pair(pair, torch_shapes)
    stages = stage_sites(pair, matched)
    probe32, outputs = probe_model(model32, stages)
    probe64, _ = probe_model(model64, stages)
    batches = dict(pair.batches())
    run = KerasRun(pair.name, versions(), {name: v.numpy() for name, v in variables(model32).items()}, stages,
                   batches, {}, next(iter(batches)), {}, {})
    for index, (case, batch) in enumerate(batches.items()):
        order = run.permutation[case] = permutation(batch, seed + index)
        values = run.values[case] = {FLOAT32: forward(probe32, stages, outputs, batch.inputs),
                                     FLOAT64: forward(probe64, stages, outputs, batch.inputs)}
        if order is not None:
            values[PERMUTED] = unpermuted(forward(probe32, stages, outputs, permuted(batch.inputs, order)), order)
    batch = batches[run.gradient_case]
    for mode in pair.modes:
        run.gradients[mode] = gradients(pair, probe32, stages, outputs, batch.inputs, batch.targets, mode)
    run.gradients[FLOAT64] = gradients(pair, probe64, stages, outputs, batch.inputs, batch.targets, EAGER)
    return run
