"""A pair: the Keras original and its PyTorch port, described once for every check.

    SPEC = Pair(
        name="text-classifier",
        build_keras=build_keras,          # "float32" | "float64" -> a built Keras model (functional or Sequential)
        build_torch=build_torch,          # torch.float32 | torch.float64 -> the port (an nn.Module)
        weights=WeightMap(rules=(...)),   # parity.core.weights
        batches=batches,                  # () -> {case: Batch(inputs={...}, targets={...})}
        keras_loss=..., torch_loss=...,   # (outputs, targets) -> scalar, in each framework
        stages=(Stage("lstm", keras="lstm", torch="lstm", torch_output=final_state),),
    )

The core (`parity.core`) builds both sides from this object, records the Keras side (float32 and
float64, stages, gradients per execution mode) and judges the port against it; nothing in the
core knows a model. `load_spec("package.module:SPEC")` or `load_spec("path/to/file.py:SPEC")`
is how the command line finds one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from parity.core.weights import WeightMap

# The Keras execution modes the gradient census can run: the eager tape, and the same step traced
# by `tf.function` (where the original QARAC lost its gradients).
EAGER, GRAPH = "eager", "tf.function"
MODES = (EAGER, GRAPH)


def first_tensor(value: Any) -> Any:
    """A module's primary output: the first element of a tuple or list, else the value."""
    return value[0] if isinstance(value, (tuple, list)) else value


@dataclass(frozen=True)
class Stage:
    """One compared stage: a Keras layer's output and the PyTorch module output it corresponds to.

    Attributes:
        name: how the report names it.
        keras: the Keras layer's name (`model.get_layer(keras)`); its output is captured in the same call.
        torch: the port's submodule path (`model.get_submodule(torch)`); its output is captured by a hook.
        torch_output: the module's output -> the array compared (an LSTM returns `(out, (h, c))`).
    """

    name: str
    keras: str
    torch: str
    torch_output: Callable[[Any], Any] = first_tensor


@dataclass(frozen=True)
class Batch:
    """One named batch: the model's inputs and the loss targets, as numpy arrays with rows first."""

    inputs: Mapping[str, np.ndarray]
    targets: Mapping[str, np.ndarray] = field(default_factory=dict)


def _call_keras(model: Any, inputs: Mapping[str, Any]) -> Any:
    return model(dict(inputs), training=False)


def _call_torch(model: Any, inputs: Mapping[str, Any]) -> Any:
    return model(**inputs)


@dataclass(frozen=True)
class Pair:
    """Everything the harness needs to know about a Keras original and its PyTorch port.

    Attributes:
        name: the pair's name (recorded in its bundles; a check refuses a bundle of another pair).
        build_keras: "float32" or "float64" -> the Keras model, built (its variables exist). The
            float64 model gets the float32 model's weights, converted.
        build_torch: a torch dtype -> the port; its weights are replaced through `weights`.
        weights: the weight table (`parity.core.weights.WeightMap`).
        batches: () -> {case: Batch}: the compared batches (special cases are batches too:
            padding, the longest input, an odd row).
        keras_loss, torch_loss: (outputs by name, targets by name) -> a scalar loss, per framework.
        stages: the compared stages in execution order; None derives one per layer from `weights`
            (the first name segment of each Keras variable, the torch module holding its key).
        modes: the Keras execution modes whose gradients are censused (`MODES`).
        call_keras, call_torch: (model, inputs by name) -> the model's output(s): a tensor (named
            "output") or a dict of them. Default: `model(inputs, training=False)`, `model(**inputs)`.
        declared_missing: torch keys allowed to lack a gradient where the Keras side has one, and
            the reason (a deviation the port makes on purpose).
        seed: the seed the Keras model is built with.
    """

    name: str
    build_keras: Callable[[str], Any]
    build_torch: Callable[[Any], Any]
    weights: WeightMap
    batches: Callable[[], Mapping[str, Batch]]
    keras_loss: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
    torch_loss: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
    stages: tuple[Stage, ...] | None = None
    modes: tuple[str, ...] = MODES
    call_keras: Callable[[Any, Mapping[str, Any]], Any] = _call_keras
    call_torch: Callable[[Any, Mapping[str, Any]], Any] = _call_torch
    declared_missing: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown:
            raise ValueError(f"pair {self.name!r}: unknown execution modes {unknown}; known: {list(MODES)}")


class SpecError(ValueError):
    """A `--spec` that cannot be loaded; the message names it."""


def load_spec(reference: str) -> Pair:
    """The `Pair` at `module:NAME` (an importable module) or `path/to/file.py:NAME`.

    Raises:
        SpecError: no colon, no such module or file, no such attribute, or not a `Pair`.
    """
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise SpecError(f"--spec {reference!r}: expected module:NAME or path/to/file.py:NAME")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SpecError(f"--spec {reference!r}: {path} is not a file")
        module_name = f"_parity_spec_{abs(hash(path.resolve()))}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module  # dataclasses defined in the file look their module up
        if str(path.resolve().parent) not in sys.path:  # the file imports its neighbours, as when run there
            sys.path.insert(0, str(path.resolve().parent))
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise SpecError(f"--spec {reference!r}: cannot import {target}: {error}") from None
    pair = getattr(module, attribute, None)
    if not isinstance(pair, Pair):
        raise SpecError(f"--spec {reference!r}: {target} has no Pair named {attribute} "
                        f"(found {type(pair).__name__})")
    return pair
