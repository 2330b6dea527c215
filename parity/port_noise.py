"""The port's own noise: its float64 twin and the variants of its own code path, measured on one batch.

The port runner's part of the noise floors (`parity.noise` says what a floor is and adds both
runners' parts up): the port re-run under every change that must not matter, each variant's
largest move from the port's float32 run recorded per value as data (`parity.results.PortNoise`).
Only the port's own code path: its float64 twin (same class, configuration and attention
implementation), the batch rows permuted, one thread instead of the default.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from parity.capture import capture_torch
from parity.noise import (REORDER_VARIANTS, SKIPPED_REORDER, compared_values, max_difference,
                          permutation, permuted, unpermute, values_and_masks)
from parity.results import PortNoise
from parity.stages import Capture
from qarac.base import built_with_weights


@contextlib.contextmanager
def _torch_setting(get: Callable[[], Any], put: Callable[[Any], None], value: Any) -> Iterator[None]:
    """One of torch's process-wide settings at `value` inside the block, as it was after it."""
    before = get()
    put(value)
    try:
        yield
    finally:
        put(before)


def _threads(count: int) -> contextlib.AbstractContextManager:
    return _torch_setting(torch.get_num_threads, torch.set_num_threads, count)


def _default_dtype(dtype: torch.dtype) -> contextlib.AbstractContextManager:
    return _torch_setting(torch.get_default_dtype, torch.set_default_dtype, dtype)


def float64_default() -> contextlib.AbstractContextManager:
    """torch's default dtype float64 inside the block (HF builds masks in it: the float64 twin's runs)."""
    return _default_dtype(torch.float64)


# pt_model -> its float64 twin, built once (building is the slow part), and the version of pt_model's
# weights the twin holds: it is reloaded when they change (the sharpened set).
_TWINS: "weakref.WeakKeyDictionary[Any, tuple[Any, tuple[int, ...]]]" = weakref.WeakKeyDictionary()


def _weights_version(model) -> tuple[int, ...]:
    """Changes whenever a parameter of `model` is written in place (torch counts each tensor's writes;
    writes through `.data`, which autograd does not see either, are not counted)."""
    return tuple(parameter._version for parameter in model.parameters())


def float64_twin(pt_model):
    """The port in float64: the same class, configuration (attention implementation included) and weights."""
    state = pt_model.state_dict()
    if pt_model not in _TWINS:
        with _default_dtype(torch.float64):
            float64, _ = built_with_weights(lambda: type(pt_model)(pt_model.config), state)
        device = next(pt_model.parameters()).device  # `check --device cuda`: the twin runs beside the port
        _TWINS[pt_model] = (float64.double().eval().to(device), _weights_version(pt_model))
    float64, loaded = _TWINS[pt_model]
    if loaded != _weights_version(pt_model):  # the weights changed since the float64 twin took them
        float64.load_state_dict(state)  # copied into the float64 parameters, converted
        _TWINS[pt_model] = (float64, _weights_version(pt_model))
    return float64


def capture_float64(pt_model, inputs) -> Capture:
    """One forward of the port's float64 twin, every stage captured."""
    with _default_dtype(torch.float64):  # HF builds its causal mask in the default dtype
        return capture_torch(float64_twin(pt_model), inputs)


def release_twins(pt_model) -> None:
    """Drop `pt_model`'s float64 twin (roberta-base shapes: 2 GB) once it is no longer needed."""
    _TWINS.pop(pt_model, None)


def _pytorch_variants(pt_model, inputs, order: np.ndarray | None, reorder: bool = True) -> dict[str, Capture]:
    """The port re-run under every change that must not matter (the reorderings only with `reorder`;
    no permuted batch for a single row)."""
    variants = {"float64": capture_float64(pt_model, inputs)}
    if reorder:
        with _threads(1):
            variants["one_thread"] = capture_torch(pt_model, inputs)
        if order is not None:
            variants["permuted_batch"] = unpermute(capture_torch(pt_model, permuted(inputs, order)), order)
    return variants


def port_noise(pt_model, inputs: Mapping[str, Any], pt: Capture, seed: int = 0,
               reorder: bool = True) -> tuple[PortNoise, Capture]:
    """How far each variant of the port's own code path moves every output and stage of one batch.

    Args:
        pt: the port's float32 capture of this batch.
        reorder: run the `REORDER_VARIANTS` (False: they were bit-identical on the padded batch).

    Returns: the variants' moves, and the float64 twin's capture of the batch (`parity.exactness`).
    """
    order = permutation(inputs, seed)
    result = PortNoise()
    if not reorder:
        result.skipped.update({variant: SKIPPED_REORDER for variant in REORDER_VARIANTS})
    elif order is None:
        result.skipped["permuted_batch"] = "one row: no other order"
    reference, masks = values_and_masks(pt, inputs)
    variants = _pytorch_variants(pt_model, inputs, order, reorder)
    for variant, capture in variants.items():
        for name, value in compared_values(capture).items():
            result.moved.setdefault(name, {})[variant] = max_difference(value, reference[name], masks[name])
    return result, variants["float64"]

