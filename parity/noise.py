"""Noise floors: how far float32 arithmetic alone moves every compared value.

A cross-framework difference means something only next to the difference that
float32 arithmetic alone produces, measured where the port under test cannot
move it. A value's floor is the sum of two parts (`parity.tolerance.value_floor`):

- the legacy's own float32 error: the legacy's float32 run against its float64
  run (the same weights and batches, recorded with it: `parity.legacy.record`), and its
  run on a permuted batch;
- the port's own rounding, measured only by variants that run the port's own
  code path: its float64 twin (same attention implementation), the batch rows
  permuted (results un-permuted; batches of two rows or more), one thread
  instead of the default (and, on the padded batch, the determinism check's repeated forward),
  counted only up to `PRECISION_BOUND` times the legacy's float32 error (never below an ulp): a
  port that loses precision in its float32 path, or is non-deterministic, inflates exactly this
  term, and would otherwise explain its own error (issue 32). What it loses beyond the allowance
  fails precision parity (`parity.precision`).

Never an alternative implementation (eager attention instead of SDPA): a bug
that lives in one implementation would be measured as noise. Each floor is at
least one float32 ulp of the value's largest magnitude (a bit-identical repeat
would otherwise give zero). Since |port - legacy| <= |port - port64| +
|port64 - legacy64| + |legacy64 - legacy| element by element, a faithful port
(one passing precision parity, so that its first term is within the allowance)
stays within one floor (plus the float64 disagreement, round-off: see
`parity.exactness`); a cross-framework error is reported in floor units and
judged against `parity.tolerance.FLOOR_BOUND`.

The port's float64 twin shares the port's code, so it cannot stand in for the
legacy: a bug in the port is in its float64 run too. It only sizes the port's
rounding (and serves the float64 exactness check, `parity.exactness`); the
verdict still compares the port with the legacy.

Each runner measures its own variants as data (the legacy: `parity.legacy.capture`; the
port: `parity.port_noise`); `floors` adds them up, reading nothing but that data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from parity.forward import TOKEN_OUTPUTS, output_arrays, stage_mask
from parity.results import PortNoise
from parity.stages import Capture
from parity.tolerance import PRECISION_BOUND, value_floor

F32_EPS = float(np.finfo(np.float32).eps)

# The port's variants (its own code path only) and the legacy's (`LEGACY_VARIANTS`; its float64 run
# is recorded, its float32 error is read at check time from the two captures).
VARIANTS = ("float64", "permuted_batch", "one_thread")
LEGACY_VARIANTS = ("float64", "permuted_batch")
# The two variants that only reorder the same float32 arithmetic. Where the kernels keep rows and
# threads apart they move nothing at all: on roberta-base shapes both were bit-identical on every
# value of every batch, on both sides, while costing about 15 s of a 150 s live run (bench/README.md
# section 3); on the tiny model the port's move values by up to 1.5e-5 (sharpened). So they are
# measured on the padded batch, and repeated on the other batches only where they moved something there.
REORDER_VARIANTS = ("permuted_batch", "one_thread")
# The variants that run the same float32 arithmetic again (reordered, or repeated: the determinism
# check's second forward of the padded batch): where they spread beyond the legacy's, the port is
# non-deterministic (`parity.precision`).
SPREAD_VARIANTS = (*REORDER_VARIANTS, "repeat")
SKIPPED_REORDER = "bit-identical on the padded batch, so not repeated on this one"


@dataclass
class NoiseFloors:
    """Per value (output or stage name): the floor and what each variant moved it by.

    Attributes:
        floor: name -> noise floor: the legacy's largest variant plus the port's largest, the port's counted
            only up to the precision allowance (`parity.tolerance.value_floor`), at least one ulp.
        ulp: name -> one float32 ulp of the value's largest legacy magnitude.
        pytorch: name -> variant -> max |variant - float32 run| of the port.
        legacy: name -> variant -> the same for the legacy (`float64`: its float32 run against its float64 run).
        skipped: variant -> why it was not run on this batch (`REORDER_VARIANTS`, one-row batches).
    """

    floor: dict[str, float] = field(default_factory=dict)
    ulp: dict[str, float] = field(default_factory=dict)
    pytorch: dict[str, dict[str, float]] = field(default_factory=dict)
    legacy: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def reorder_moved(self) -> bool:
        """Did a reordering variant move any value, on either side?"""
        return reorder_moved(self.pytorch) or reorder_moved(self.legacy)

    def to_dict(self) -> dict[str, Any]:
        return {"floor": dict(self.floor), "ulp": dict(self.ulp), "pytorch": {k: dict(v) for k, v in self.pytorch.items()},
                "legacy": {k: dict(v) for k, v in self.legacy.items()}, "skipped": dict(self.skipped)}


def permuted(inputs: Mapping[str, Any], order: np.ndarray) -> dict[str, Any]:
    # A tensor indexed by an integer array takes those rows (numpy's and torch's alike).
    return {name: type(tokens)(tokens.input_ids[order], tokens.attention_mask[order]) for name, tokens in inputs.items()}


def unpermute(capture: Capture, order: np.ndarray) -> Capture:
    inverse = np.argsort(order)
    return Capture({k: v[inverse] for k, v in capture.outputs.items()},
                   {k: None if v is None else v[inverse] for k, v in capture.stage_inputs.items()},
                   {k: v[inverse] for k, v in capture.stage_outputs.items()}, list(capture.order))


def compared_values(capture: Capture) -> dict[str, np.ndarray]:
    """Every compared value of a capture: `output:<name>` and each stage's output."""
    return {**{f"output:{k}": v for k, v in output_arrays(capture).items()}, **capture.stage_outputs}


def value_masks(names, inputs) -> dict[str, np.ndarray | None]:
    """The real-token mask of each compared value (None: a vector)."""
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


def reorder_moved(variants: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether a `REORDER_VARIANTS` run moved any value (value -> variant -> difference)."""
    return any(moved > 0 for by_variant in variants.values()
               for variant, moved in by_variant.items() if variant in REORDER_VARIANTS)


def permutation(inputs: Mapping[str, Any], seed: int) -> np.ndarray | None:
    """The row order of the permuted-batch variant: seeded, never the identity; None for one row."""
    batch = next(iter(inputs.values())).input_ids.shape[0]
    if batch < 2:
        return None
    order = np.random.default_rng(seed).permutation(batch)
    if (order == np.arange(batch)).all():
        order = np.roll(order, 1)
    return order


def values_and_masks(capture: Capture, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
    """`compared_values` of a capture and their `value_masks`."""
    values = compared_values(capture)
    return values, value_masks(values, inputs)


def legacy_float64_error(legacy: Capture, legacy64: Capture, inputs: Mapping[str, Any]) -> dict[str, float]:
    """The legacy's own float32 error per value: max |float32 run - float64 run| (real tokens)."""
    reference, exact = compared_values(legacy), compared_values(legacy64)
    masks = value_masks(reference, inputs)
    return {name: max_difference(value, exact[name], masks[name]) for name, value in reference.items()}


def floors(port: PortNoise, legacy: Capture, legacy_variants: Mapping[str, Mapping[str, float]],
           inputs: Mapping[str, Any], legacy64: Capture | None = None) -> NoiseFloors:
    """Noise floors of every output and stage of one batch, from both runners' own variants.

    Args:
        port: the port's own variants on this batch (`parity.port_noise.port_noise`).
        legacy: the legacy's float32 capture of this batch (its values give each floor's ulp).
        legacy_variants: the legacy's own reordering noise (`parity.legacy.capture.legacy_floor_variants`, recorded).
        legacy64: the legacy's float64 capture of this batch; None only where none was recorded
            (the legacy's float32 error is then not part of the floor, and the result says so).
    """
    reference = compared_values(legacy)
    result = NoiseFloors(legacy={name: dict(legacy_variants.get(name, {})) for name in reference})
    if legacy64 is None:
        result.skipped["legacy float64"] = (f"no float64 run of the legacy recorded: the port's own rounding "
                                            f"counts up to {PRECISION_BOUND:g} ulps of each value")
    else:
        for name, error in legacy_float64_error(legacy, legacy64, inputs).items():
            result.legacy[name]["float64"] = error
    result.skipped.update(port.skipped)
    result.pytorch = {name: dict(moved) for name, moved in port.moved.items()}
    for name, value in reference.items():
        ulp = result.ulp[name] = F32_EPS * float(np.abs(value).max(initial=0.0))
        own_port = max(result.pytorch[name].values(), default=0.0)
        own_legacy = max(result.legacy[name].values(), default=0.0)
        result.floor[name] = value_floor(ulp, own_legacy, own_port, result.legacy[name].get("float64"))
    return result
