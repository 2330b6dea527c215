"""Noise floors: how far float32 arithmetic alone moves every compared value.

A cross-framework difference means something only next to the difference the
same framework shows under changes that must not matter. For each batch the
PyTorch legacy preset is re-run

- in float64 (same weights, same code): the port's own float32 rounding error;
- with eager attention instead of SDPA: another, equivalent kernel;
- with the batch rows permuted (results un-permuted): another reduction order
  (batches of two rows or more; the max-length batch has one);
- on one thread instead of the default: another blocking of the sums;

and the legacy is re-run on the permuted batch (TensorFlow fixes its thread pools
when it starts, and a float64 legacy would be a second Keras model built in
float64: neither is varied here, so the legacy's own floor is the permutation's
alone, usually zero, and the port's floor stands for both). Each value's noise floor is the
largest of these differences, and never less than one float32 ulp of the
value's largest magnitude (a bit-identical repeat would otherwise give a floor
of zero). A cross-framework error is then reported in floor units and judged
against `FLOOR_BOUND` (see its comment).

The float64 run shares the port's code, so it cannot stand in for the legacy:
a bug in the port is in its float64 run too. It only sizes the rounding noise,
and the verdict still compares the port with the legacy
(`tests/test_sharpness.py::test_float64_oracle_cannot_hide_a_port_bug`).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from parity.capture import Capture, capture_keras, capture_torch
from parity.forward import TOKEN_OUTPUTS, output_arrays, stage_mask
from qarac.base import built_with_weights

F32_EPS = float(np.finfo(np.float32).eps)
# Verdict bound in floor units. Measured (`python -m bench.noise_floors --models tiny mid roberta-base`,
# bench/README.md section 6): the worst clean port-vs-legacy error over every output and stage is
# 2.45x its floor on the tiny model (1.80x sharpened), 2.91x (5.00x) at mid size, 2.08x (3.78x) on
# roberta-base shapes; the largest ratios sit on the consistency cosine, whose floor is one ulp.
# Two independent float32 implementations each carry up to about one floor of rounding error, so
# ~2x is expected and the max over thousands of elements reaches a few times that. 8x stays above
# every clean measurement (1.6x margin over the worst) while each planted bug of the mutation suite
# that moves a forward value lands far above it (bench/README.md section 5).
FLOOR_BOUND = 8.0

VARIANTS = ("float64", "eager_attention", "permuted_batch", "one_thread")
# The two variants that only reorder the same float32 arithmetic. Where the kernels keep rows and
# threads apart they move nothing at all: on roberta-base shapes both were bit-identical on every
# value of every batch, on both sides, while costing about 15 s of a 150 s live run (bench/README.md
# section 3); on the tiny model the port's move values by up to 1.5e-5 (sharpened). So they are
# measured on the padded batch, and repeated on the other batches only where they moved something there.
REORDER_VARIANTS = ("permuted_batch", "one_thread")
SKIPPED_REORDER = "bit-identical on the padded batch, so not repeated on this one"


@dataclass
class NoiseFloors:
    """Per value (output or stage name): the floor and what each variant moved it by.

    Attributes:
        floor: name -> noise floor (max over variants and sides, at least one ulp).
        pytorch: name -> variant -> max |variant - float32 run| of the port.
        legacy: name -> variant -> the same for the legacy.
        skipped: variant -> why it was not run on this batch (`REORDER_VARIANTS`, one-row batches).
    """

    floor: dict[str, float] = field(default_factory=dict)
    pytorch: dict[str, dict[str, float]] = field(default_factory=dict)
    legacy: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def reorder_moved(self) -> bool:
        """Did a reordering variant move any value, on either side?"""
        return reorder_moved(self.pytorch) or reorder_moved(self.legacy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _permuted(inputs: Mapping[str, Any], order: np.ndarray) -> dict[str, Any]:
    index = torch.as_tensor(order)
    return {name: type(tokens)(tokens.input_ids[index], tokens.attention_mask[index]) for name, tokens in inputs.items()}


def _unpermute(capture: Capture, order: np.ndarray) -> Capture:
    inverse = np.argsort(order)
    return Capture({k: v[inverse] for k, v in capture.outputs.items()},
                   {k: None if v is None else v[inverse] for k, v in capture.stage_inputs.items()},
                   {k: v[inverse] for k, v in capture.stage_outputs.items()}, list(capture.order))


def _values(capture: Capture) -> dict[str, np.ndarray]:
    return {**{f"output:{k}": v for k, v in output_arrays(capture).items()}, **capture.stage_outputs}


def _masks(names, inputs) -> dict[str, np.ndarray | None]:
    masks = {}
    for name in names:
        if name.startswith("output:"):
            token = TOKEN_OUTPUTS.get(name[len("output:"):])
            masks[name] = None if token is None else inputs[token].attention_mask.numpy()
        else:
            masks[name] = stage_mask(name, inputs)
    return masks


def max_difference(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> float:
    """max |a - b| over real tokens (all elements without a mask), in float64."""
    error = np.subtract(a, b, dtype=np.float64)  # converted as it goes: no float64 copies of a and b
    np.abs(error, out=error)
    if mask is None:
        return float(error.max(initial=0.0))
    real = np.broadcast_to(mask.astype(bool).reshape(mask.shape + (1,) * (error.ndim - 2)), error.shape)
    return float(error.max(initial=0.0, where=real))


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


# pt_model -> its float64 and eager-attention twins, built once (building is the slow part), and the
# version of pt_model's weights the float64 twin holds: it is reloaded when they change (the sharpened set).
_TWINS: "weakref.WeakKeyDictionary[Any, tuple[Any, Any, tuple[int, ...]]]" = weakref.WeakKeyDictionary()


def _weights_version(model) -> tuple[int, ...]:
    """Changes whenever a parameter of `model` is written in place (torch counts each tensor's writes;
    writes through `.data`, which autograd does not see either, are not counted)."""
    return tuple(parameter._version for parameter in model.parameters())


def _twins(pt_model) -> tuple[Any, Any]:
    state = pt_model.state_dict()
    if pt_model not in _TWINS:
        with _default_dtype(torch.float64):
            float64, _ = built_with_weights(lambda: type(pt_model)(pt_model.config), state)
        # The eager twin holds the port's own tensors: it follows every change of them (the sharpened set).
        eager, _ = built_with_weights(lambda: type(pt_model)(pt_model.config.replace(attn_implementation="eager")),
                                      state, share=True)
        device = next(pt_model.parameters()).device  # `check --device cuda`: the twins run beside the port
        _TWINS[pt_model] = (float64.double().eval().to(device), eager.eval().to(device), _weights_version(pt_model))
    float64, eager, loaded = _TWINS[pt_model]
    if loaded != _weights_version(pt_model):  # the weights changed since the float64 twin took them
        float64.load_state_dict(state)  # copied into the float64 parameters, converted
        _TWINS[pt_model] = (float64, eager, _weights_version(pt_model))
    return float64, eager


def release_twins(pt_model) -> None:
    """Drop `pt_model`'s twins (roberta-base shapes: 3 GB) once its floors are measured."""
    _TWINS.pop(pt_model, None)


def reorder_moved(variants: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether a `REORDER_VARIANTS` run moved any value (value -> variant -> difference)."""
    return any(moved > 0 for by_variant in variants.values()
               for variant, moved in by_variant.items() if variant in REORDER_VARIANTS)


def _pytorch_variants(pt_model, inputs, order: np.ndarray | None, reorder: bool = True) -> dict[str, Capture]:
    """The port re-run under every change that must not matter (the reorderings only with `reorder`;
    no permuted batch for a single row)."""
    float64, eager = _twins(pt_model)
    with _default_dtype(torch.float64):  # HF builds its causal mask in the default dtype
        in_float64 = capture_torch(float64, inputs)
    variants = {"float64": in_float64, "eager_attention": capture_torch(eager, inputs)}
    if reorder:
        with _threads(1):
            variants["one_thread"] = capture_torch(pt_model, inputs)
        if order is not None:
            variants["permuted_batch"] = _unpermute(capture_torch(pt_model, _permuted(inputs, order)), order)
    return variants


def permutation(inputs: Mapping[str, Any], seed: int) -> np.ndarray | None:
    """The row order of the permuted-batch variant: seeded, never the identity; None for one row."""
    batch = next(iter(inputs.values())).input_ids.shape[0]
    if batch < 2:
        return None
    order = np.random.default_rng(seed).permutation(batch)
    if (order == np.arange(batch)).all():
        order = np.roll(order, 1)
    return order


def legacy_floor_variants(tf_model, inputs: Mapping[str, Any], legacy: Capture,
                          seed: int = 0, reorder: bool = True) -> dict[str, dict[str, float]]:
    """The legacy's own noise on one batch: value -> {"permuted_batch": max difference}
    ({} for one row, or without `reorder`).

    Args:
        legacy: the legacy's float32 capture of this batch.
    """
    order = permutation(inputs, seed)
    reference = _values(legacy)
    if order is None or not reorder:  # one row has no other order; or the padded batch showed none matters
        return {name: {} for name in reference}
    masks = _masks(reference, inputs)
    permuted = _unpermute(capture_keras(tf_model, _permuted(inputs, order)), order)
    return {name: {"permuted_batch": max_difference(value, reference[name], masks[name])}
            for name, value in _values(permuted).items()}


def measure_floors(pt_model, inputs: Mapping[str, Any], pt: Capture, legacy: Capture,
                   legacy_variants: Mapping[str, Mapping[str, float]], seed: int = 0,
                   reorder: bool = True) -> NoiseFloors:
    """Noise floors of every output and stage of one batch.

    Args:
        pt, legacy: the float32 captures of this batch already taken for the comparison.
        legacy_variants: the legacy's own noise (`legacy_floor_variants`, live or recorded).
        reorder: run the port's `REORDER_VARIANTS` (False: they were bit-identical on the padded batch).
    """
    order = permutation(inputs, seed)
    reference_pt, reference_tf = _values(pt), _values(legacy)
    masks = _masks(reference_tf, inputs)
    floors = NoiseFloors(legacy={name: dict(variants) for name, variants in legacy_variants.items()})
    if not reorder:
        floors.skipped.update({variant: SKIPPED_REORDER for variant in REORDER_VARIANTS})
    elif order is None:
        floors.skipped["permuted_batch"] = "one row: no other order"
    for variant, capture in _pytorch_variants(pt_model, inputs, order, reorder).items():
        for name, value in _values(capture).items():
            floors.pytorch.setdefault(name, {})[variant] = max_difference(value, reference_pt[name], masks[name])
    for name, reference in reference_tf.items():
        ulp = F32_EPS * float(np.abs(reference).max(initial=0.0))
        measured = [*floors.pytorch[name].values(), *floors.legacy[name].values()]
        floors.floor[name] = max(ulp, *measured)
    return floors
