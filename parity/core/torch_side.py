"""The torch runner: the port run on a Keras run's batches, every result kept as data (`TorchRun`).

The port is built by the spec, in float32 and as its float64 twin (the same code, built in
float64), and given the recorded Keras weights through the spec's weight map, strictly: every
state-dict key is written or declared `torch_only`. Stages are captured by forward hooks on the
modules the stages name, from the port's real forward. Besides its float32 run the port is run
under every change that must not matter, its own code path only: float64, the rows permuted, one
thread. Gradients of the spec's loss: a parameter autograd never reaches keeps `.grad` None,
recorded as None, never as zeros.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from parity.core.batches import permuted, unpermuted
from parity.core.results import FLOAT32, FLOAT64, ONE_THREAD, PERMUTED, KerasRun, StageSite, TorchRun, Values
from parity.core.spec import Pair, Stage, first_tensor
from parity.core.weights import Matched


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "numpy": np.__version__}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_weights(model: torch.nn.Module, matched: Matched, keras: Mapping[str, np.ndarray]) -> None:
    """Write the Keras weights into `model` through the map; `load_state_dict(strict=True)`."""
    state = model.state_dict()
    converted = matched.to_torch(keras)
    for name, value in converted.items():
        state[name] = torch.from_numpy(value).to(state[name].dtype)
    model.load_state_dict(state, strict=True)


def build_port(pair: Pair, dtype: torch.dtype, matched: Matched, keras: Mapping[str, np.ndarray],
               model: torch.nn.Module | None = None) -> torch.nn.Module:
    """The port in `dtype` holding the Keras weights, in eval mode (`model`: a user's port to use instead)."""
    with default_dtype(dtype):
        port = pair.build_torch(dtype) if model is None else model
        port = port.to(dtype)
    load_weights(port, matched, keras)
    return port.eval()


def _stage_selectors(pair: Pair, sites: list[StageSite]) -> dict[str, Any]:
    declared = {stage.name: stage for stage in pair.stages or ()}
    return {site.name: declared.get(site.name, Stage(site.name, site.keras, site.torch)).torch_output for site in sites}


def _named_outputs(output: Any) -> dict[str, Any]:
    if isinstance(output, Mapping):
        return dict(output)
    if isinstance(output, (tuple, list)):
        return {f"output_{i}": value for i, value in enumerate(output)} if len(output) > 1 else {"output": output[0]}
    return {"output": output}


def _numpy(value: Any) -> np.ndarray:
    return first_tensor(value).detach().cpu().numpy() if isinstance(first_tensor(value), torch.Tensor) \
        else np.asarray(value)


@contextlib.contextmanager
def captured(model: torch.nn.Module, sites: list[StageSite], selectors: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Forward hooks on every stage's module; the block sees stage name -> selected output (a tensor)."""
    found: dict[str, Any] = {}
    handles = []
    for site in sites:
        try:
            module = model.get_submodule(site.torch)
        except AttributeError:
            raise ValueError(f"stage {site.name!r}: the port has no module {site.torch!r}") from None

        def hook(_module, _inputs, output, name=site.name):
            if name in found:
                raise RuntimeError(f"stage {name!r}: module called twice in one forward; name one call per stage")
            found[name] = selectors[name](output)
        handles.append(module.register_forward_hook(hook))
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def _tensors(model: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Float inputs in the port's dtype, integer inputs as they are."""
    dtype = next(model.parameters()).dtype
    return {name: torch.from_numpy(np.ascontiguousarray(value)).to(dtype) if np.issubdtype(value.dtype, np.floating)
            else torch.from_numpy(np.ascontiguousarray(value)) for name, value in arrays.items()}


def run_values(pair: Pair, model: torch.nn.Module, sites: list[StageSite],
               arrays: Mapping[str, np.ndarray], grad: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stage name -> tensor, output name -> tensor) of one forward of the port."""
    with captured(model, sites, _stage_selectors(pair, sites)) as stages, torch.set_grad_enabled(grad):
        outputs = _named_outputs(pair.call_torch(model, _tensors(model, arrays)))
    missing = [site.name for site in sites if site.name not in stages]
    if missing:
        raise RuntimeError(f"stage {missing[0]!r}: its module {next(s.torch for s in sites if s.name == missing[0])!r} "
                           "was never called in the port's forward")
    return stages, outputs


def forward(pair: Pair, model, sites, arrays) -> Values:
    """Every stage (in order) and output of one forward, as numpy."""
    stages, outputs = run_values(pair, model, sites, arrays)
    values = {f"stage:{site.name}": _numpy(stages[site.name]) for site in sites}
    values.update({f"output:{name}": _numpy(value) for name, value in outputs.items()})
    return values


def gradients(pair: Pair, model: torch.nn.Module, sites, arrays, targets) -> dict[str, np.ndarray | None]:
    """d loss / d every parameter, by state-dict key; None where autograd never reached it."""
    model.zero_grad(set_to_none=True)
    _, outputs = run_values(pair, model, sites, arrays, grad=True)
    loss = pair.torch_loss(outputs, {k: torch.from_numpy(np.asarray(v)) for k, v in targets.items()})
    loss.backward()
    return {name: None if p.grad is None else p.grad.detach().cpu().numpy().copy()
            for name, p in model.named_parameters()}


def run_port(pair: Pair, keras: KerasRun, matched: Matched, model: torch.nn.Module | None = None) -> TorchRun:
    """The port on every batch of the Keras run: float32, float64 twin, permuted rows, one thread; gradients."""
    port32 = build_port(pair, torch.float32, matched, keras.weights, model)
    port64 = build_port(pair, torch.float64, matched, keras.weights,
                        None if model is None else _twin_of(model))
    sites = keras.stages
    result = TorchRun(versions(), {}, {}, True, [name for name, _ in port32.named_parameters()], matched.torch_kept)
    for case, batch in keras.batches.items():
        values = result.values[case] = {FLOAT32: forward(pair, port32, sites, batch.inputs)}
        with default_dtype(torch.float64):
            values[FLOAT64] = forward(pair, port64, sites, batch.inputs)
        with threads(1):
            values[ONE_THREAD] = forward(pair, port32, sites, batch.inputs)
        order = keras.permutation.get(case)
        if order is not None:
            values[PERMUTED] = unpermuted(forward(pair, port32, sites, permuted(batch.inputs, order)), order)
        again = forward(pair, port32, sites, batch.inputs)
        result.repeat_identical &= all(np.array_equal(again[k], v) for k, v in values[FLOAT32].items())
    batch = keras.batches[keras.gradient_case]
    result.gradients[FLOAT32] = gradients(pair, port32, sites, batch.inputs, batch.targets)
    with default_dtype(torch.float64):
        result.gradients[FLOAT64] = gradients(pair, port64, sites, batch.inputs, batch.targets)
    return result


def _twin_of(model: torch.nn.Module) -> torch.nn.Module:
    """A user's port in float64: a deep copy converted (its code is the same code)."""
    import copy

    return copy.deepcopy(model)
