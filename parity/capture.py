"""The port's stages captured from its real forward pass (forward hooks), as a `parity.stages.Capture`.

See `parity.stages` for why stages are captured rather than re-run; the legacy's
counterpart is `parity.legacy.capture`.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from parity.stages import TORCH_ROBERTA, Capture, StageRecorder, first_tensor, num_layers, stage_modules


def torch_stage_modules(model: Any) -> dict[str, torch.nn.Module]:
    """Site -> module of a PyTorch `QaracTrainerModel`."""
    return stage_modules(model, TORCH_ROBERTA)


def _torch_numpy(value: Any) -> np.ndarray:
    return first_tensor(value).detach().cpu().numpy().copy()


@contextlib.contextmanager
def torch_hooks(model: Any, substitute: Mapping[str, np.ndarray | None] | None = None,
                arguments: dict[str, tuple[tuple, dict]] | None = None) -> Iterator[Capture]:
    """Record every stage of `model`'s forward passes run inside the block.

    Args:
        model: a PyTorch `QaracTrainerModel` on the per-call path (the legacy preset).
        substitute: stage name -> an input to feed that stage *instead of* what the
            forward hands it (same shape); used to measure the error each stage
            introduces on its own, given the legacy's input.
        arguments: filled with stage name -> the (args, kwargs) the forward called the stage with,
            before any substitution, the tensors themselves (`parity.backward` re-runs each stage
            alone with them).

    Yields: the `Capture` being filled (outputs are left to the caller).
    """
    modules = torch_stage_modules(model)
    recorder = StageRecorder(num_layers(model, TORCH_ROBERTA), _torch_numpy)
    pending: dict[str, list[tuple[str, Any]]] = {site: [] for site in modules}
    handles = []

    def before(site: str, module, args, kwargs):
        name = recorder.name(site)
        if arguments is not None:
            arguments[name] = (args, kwargs)
        replacement = (substitute or {}).get(name)
        if replacement is not None and args:
            args = (torch.as_tensor(replacement, dtype=args[0].dtype, device=args[0].device), *args[1:])
        stage_input = None if site.endswith("embeddings") else args[0]
        pending[site].append((name, stage_input))
        return args, kwargs

    def after(site: str, module, args, kwargs, output):
        name, stage_input = pending[site].pop()
        recorder.record(name, stage_input, output)

    for site, module in modules.items():
        handles.append(module.register_forward_pre_hook(functools.partial(before, site), with_kwargs=True))
        handles.append(module.register_forward_hook(functools.partial(after, site), with_kwargs=True))
    try:
        yield recorder.capture
    finally:
        for handle in handles:
            handle.remove()


def capture_torch(model: Any, inputs: Mapping[str, Any],
                  substitute: Mapping[str, np.ndarray | None] | None = None,
                  arguments: dict[str, tuple[tuple, dict]] | None = None) -> Capture:
    """One trainer forward of the PyTorch model (no grad), every stage recorded (`torch_hooks`)."""
    if model.uses_batched_calls:
        raise ValueError("stage capture follows the legacy's call order: use a model on the per-call path "
                         "(the legacy preset, or batched_calls=False)")
    with torch.no_grad(), torch_hooks(model, substitute, arguments) as capture:
        outputs = model(inputs).as_dict()
    capture.outputs = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
    return capture

