"""One backend's run of Keras 3 QARAC, as data: `python -m keras3_qarac.runner --work DIR`.

Keras fixes its backend at import (`KERAS_BACKEND`), so `parity.keras3` starts this module
once per backend. It reads `DIR/inputs.json` (model directory, seed, parameter names) and
`DIR/inputs.safetensors` (the port's weights by canonical PyTorch name, the padded batch and
its targets), and writes `DIR/<backend>/results.safetensors` and `results.json`:

- the forward (training off) on the batch: the four outputs and every stage, each stage keyed
  `stage/<site>#<call index>` (the caller names the calls);
- gradients of the total loss per parameter (port names and layout), per mode:
  `eager`, the backend's own eager differentiation (TensorFlow `GradientTape`, PyTorch
  `backward`, `jax.vjp` without `jit`), and `compiled`, one real `fit` step (Keras' own
  train step: `tf.function` on TensorFlow, `jax.jit` on JAX, eager `backward` on PyTorch
  with `jit_compile="auto"`), its gradients read where the optimizer receives them;
- per mode which gradients were None (missing), and Keras' "Gradients do not exist" warning.

An exception is written to `results.json` as `error`, with the exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

MODES = ("eager", "compiled")
OUTPUTS = ("encode_decode", "question_answering", "reasoning", "consistency")


def read_inputs(work: Path) -> tuple[dict, dict[str, np.ndarray], dict, dict]:
    """(meta, weights by port name, trainer inputs, targets) from the work directory."""
    from safetensors.numpy import load_file

    meta = json.loads((work / "inputs.json").read_text())
    arrays = load_file(str(work / "inputs.safetensors"))
    weights = {name: arrays[f"weights/{name}"] for name in meta["parameters"]}
    inputs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("inputs/"):
            _, name, field = key.split("/")
            inputs.setdefault(name, {})[field] = value.astype(np.int32)
    batch = len(arrays["targets/consistency"])
    targets = {"encode_decode": arrays["targets/encode_decode"].astype(np.int32),
               "question_answering": np.zeros((batch, meta["hidden_size"]), dtype=np.float32),
               "reasoning": arrays["targets/reasoning"].astype(np.int32),
               "consistency": arrays["targets/consistency"].astype(np.float32).reshape(batch, 1)}
    return meta, weights, inputs, targets


def stage_sites(trainer: Any) -> dict[str, tuple[Any, str]]:
    """Site (the harness's stage names, `parity.capture`) -> (object, method) whose calls are that stage."""
    encoder, decoder = trainer.question_encoder.encoder, trainer.decoder.decoder
    head = trainer.decoder.decoder_head
    sites = {"encoder base: embeddings": (encoder, "embed")}
    sites.update({f"encoder base: layer {i}": (layer, "call") for i, layer in enumerate(encoder.backbone.transformer_layers)})
    sites["question encoder head: output"] = (trainer.question_encoder.head, "call")
    sites["answer encoder head: output"] = (trainer.answer_encoder.head, "call")
    sites["decoder base: embeddings"] = (decoder, "embed")
    sites.update({f"decoder base: layer {i}": (layer, "call") for i, layer in enumerate(decoder.backbone.transformer_layers)})
    sites.update({"decoder head: layer_0": (head.layer_0, "call"), "decoder head: layer_1": (head.layer_1, "call"),
                  "decoder head: LM head": (head.head, "call")})
    return sites


@contextlib.contextmanager
def recording(trainer: Any) -> Iterator[list[tuple[str, Any]]]:
    """Record every stage's output (the backend's own tensors) of the trainer calls inside the block,
    as `(stage/<site>#<call index>, output)` in execution order: each stage method is wrapped on its
    instance for the duration."""
    recorded, calls = [], {}

    def wrap(site, method):
        @functools.wraps(method)
        def recording_call(*args, **kwargs):
            output = method(*args, **kwargs)
            recorded.append((f"stage/{site}#{calls.get(site, 0)}", output))
            calls[site] = calls.get(site, 0) + 1
            return output
        return recording_call

    sites = stage_sites(trainer)
    for site, (owner, name) in sites.items():
        setattr(owner, name, wrap(site, getattr(owner, name)))
    try:
        yield recorded
    finally:
        for owner, name in sites.values():
            delattr(owner, name)  # the instance attribute: the class's method shows again


def as_arrays(recorded: list[tuple[str, Any]], outputs: dict) -> tuple[dict[str, np.ndarray], list[str]]:
    """Recorded stages and the trainer's outputs as numpy: `stage/...` and `output/<name>` (consistency (B,))."""
    from keras3_qarac._keras import ops

    arrays = {key: np.array(ops.convert_to_numpy(value)) for key, value in recorded}
    for name in OUTPUTS:
        arrays[f"output/{name}"] = np.array(ops.convert_to_numpy(outputs[name]))
    arrays["output/consistency"] = arrays["output/consistency"][:, 0]  # (B, 1) -> (B,) as the harness
    return arrays, [key for key, _ in recorded]


def capture_forward(trainer: Any, inputs: dict) -> tuple[dict[str, np.ndarray], list[str]]:
    """One eager trainer call (training off), every stage's output recorded from the real forward.

    Returns:
        arrays `output/<name>` and `stage/<site>#<index>`, and the stage keys in execution order.
    """
    with recording(trainer) as recorded:
        outputs = trainer(inputs, training=False)
    return as_arrays(recorded, outputs)


def jax_forward_and_gradients(trainer: Any, inputs: dict, targets: dict):
    """JAX: the captured forward and the eager gradients from one un-jitted `jax.vjp` (op-by-op
    execution in JAX costs a compilation per operation and shape: one pass instead of two).

    Returns:
        `capture_forward`'s pair, and `eager_gradients`' dict.
    """
    import jax

    from keras3_qarac.build import total_loss

    variables = trainer.trainable_variables
    non_trainable = [variable.value for variable in trainer.non_trainable_variables]

    def loss_of(values):
        with recording(trainer) as recorded:
            outputs, _ = trainer.stateless_call(values, non_trainable, inputs, training=False)
        return total_loss(outputs, targets), (outputs, recorded)

    loss, pullback, (outputs, recorded) = jax.vjp(loss_of, [v.value for v in variables], has_aux=True)
    (grads,) = pullback(jax.numpy.ones_like(loss))
    return as_arrays(recorded, outputs), {id(v): np.asarray(g) for v, g in zip(variables, grads)}


def eager_gradients(trainer: Any, inputs: dict, targets: dict) -> dict[int, Any]:
    """TensorFlow and PyTorch: gradients of the total loss, training off, keyed by id(variable); None: no gradient."""
    from keras3_qarac._keras import backend, ops
    from keras3_qarac.build import total_loss

    variables = trainer.trainable_variables
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = total_loss(trainer(inputs, training=False), targets)
        grads = tape.gradient(loss, variables)
    elif name == "torch":
        for variable in variables:
            variable.value.grad = None
        loss = total_loss(trainer(inputs, training=False), targets)
        loss.backward()
        grads = [variable.value.grad for variable in variables]
    else:  # JAX: `jax_forward_and_gradients`
        raise ValueError(f"eager_gradients runs on tensorflow and torch, not {name!r}")
    return {id(v): None if g is None else ops.convert_to_numpy(g) for v, g in zip(variables, grads)}


def recording_optimizer():
    """The original's optimizer (Nadam, ExponentialDecay(1e-5, 100, 0.99)), which also records each
    gradient `fit`'s train step hands it: into an optimizer variable (so that it survives `jax.jit`
    and `tf.function`, whose state Keras writes back), and which were None."""
    from keras3_qarac._keras import keras
    from keras3_qarac.build import legacy_schedule

    class GradientRecordingNadam(keras.optimizers.Nadam):
        def build(self, variables):
            super().build(variables)
            self.gradient_probes = [self.add_variable_from_reference(v, name="received_gradient") for v in variables]
            self.missing_indices = set()

        def apply(self, grads, trainable_variables=None):
            grads = list(grads)
            variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
            for grad, variable in zip(grads, variables):
                index = self._get_variable_index(variable)
                if grad is None:  # decided when the step is traced (TF, JAX) or run (PyTorch)
                    self.missing_indices.add(index)
                else:
                    self.gradient_probes[index].assign(grad)
            return super().apply(grads, trainable_variables)

    return GradientRecordingNadam(learning_rate=legacy_schedule())


def fit_gradients(trainer: Any, inputs: dict, targets: dict) -> tuple[dict[int, Any], dict[str, Any]]:
    """One real `fit` step with the original's losses; the gradients its train step produced.

    Returns:
        gradients keyed by id(variable) (None: missing), and facts of the step (`jit_compile`
        as resolved, the warning Keras logged).
    """
    from keras3_qarac._keras import ops
    from keras3_qarac.build import legacy_losses

    optimizer = recording_optimizer()
    trainer.compile(optimizer=optimizer, loss=legacy_losses())  # jit_compile="auto", as a user's
    variables = trainer.trainable_variables
    optimizer.build(variables)  # before fit, so the probes are part of the state fit carries
    batch = len(targets["consistency"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(inputs, targets, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    texts = [str(w.message) for w in caught if "Gradients do not exist" in str(w.message)]
    grads = {}
    for index, variable in enumerate(variables):
        missing = index in optimizer.missing_indices
        grads[id(variable)] = None if missing else ops.convert_to_numpy(optimizer.gradient_probes[index].value)
    return grads, {"jit_compile": bool(trainer.jit_compile), "warning": texts[0] if texts else None}


def versions() -> dict[str, str]:
    from keras3_qarac._keras import backend, keras, keras_hub

    found = {"python": platform.python_version(), "keras": keras.__version__, "keras_hub": keras_hub.__version__,
             "numpy": np.__version__}
    module = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend()]
    found[module] = __import__(module).__version__
    return found


def run(work: Path, backend_name: str) -> dict[str, Any]:
    """Every result of one backend, written under `work/<backend>/`; returns the JSON part."""
    from safetensors.numpy import save_file

    from keras3_qarac._keras import backend
    from keras3_qarac.build import build_trainer
    from keras3_qarac.weights import gradients_by_pt_name, set_weights

    if backend() != backend_name:
        raise RuntimeError(f"asked for the {backend_name} backend but Keras runs on {backend()}: "
                           f"set KERAS_BACKEND={backend_name} before Python starts")
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    meta, weights, inputs, targets = read_inputs(work)
    trainer = build_trainer(Path(meta["model_dir"]), seed=meta["seed"],
                            nested_tf_function=meta.get("nested_tf_function", True))
    mapping = set_weights(trainer, weights)
    shapes = {name: tuple(value.shape) for name, value in weights.items()}
    lap("build")
    if backend_name == "jax":
        (arrays, order), eager = jax_forward_and_gradients(trainer, inputs, targets)
        lap("forward and eager gradients")
    else:
        arrays, order = capture_forward(trainer, inputs)
        lap("forward")
        eager = eager_gradients(trainer, inputs, targets)
        lap("eager gradients")
    results: dict[str, Any] = {"backend": backend_name, "versions": versions(), "order": order, "modes": {},
                               "nested_tf_function": trainer.question_encoder.head.nested_tf_function}
    per_mode = {"eager": (eager, {})}
    per_mode["compiled"] = fit_gradients(trainer, inputs, targets)  # last: it changes the weights
    lap("compiled gradients")
    for mode, (by_id, facts) in per_mode.items():
        grads = gradients_by_pt_name(mapping, by_id, shapes)
        results["modes"][mode] = {"missing": sorted(n for n, g in grads.items() if g is None), **facts}
        arrays.update({f"grad/{mode}/{n}": g for n, g in grads.items() if g is not None})
    results["parameters"] = sorted(mapping)
    results["timings_s"] = timings
    out = work / backend_name
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(out / "results.safetensors"))
    return results


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m keras3_qarac.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="directory with inputs.json and inputs.safetensors")
    args = parser.parse_args(argv)
    backend_name = os.environ.get("KERAS_BACKEND", "tensorflow")
    out = args.work / backend_name
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args.work, backend_name)
        status = 0
    except Exception as error:  # reported as data: the caller names the backend and the cause
        results = {"backend": backend_name, "error": f"{type(error).__name__}: {error}",
                   "traceback": traceback.format_exc()}
        status = 1
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
