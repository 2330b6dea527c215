"""A pair's Keras run as a reference bundle (`parity.bundle`: safetensors + a digested manifest), and back.

Arrays (all float arrays as the original produced them, float32 or float64):

    weights/<variable>                      the Keras weights both sides run with
    batch/<case>/inputs/<name>, batch/<case>/targets/<name>
    keras/<case>/<variant>/<value>          variant: float32, float64, permuted (rows put back)
    keras/gradients/<mode>/<variable>       mode: eager, tf.function (float32), float64 (eager)

The manifest's `pair` entry holds the rest: the pair's name, the stages, the cases and their
order, each value list, the permutations, which gradients the tape left as None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parity.bundle import Bundle, BundleError, read_bundle, write_bundle
from parity.core.results import FLOAT32, FLOAT64, KerasRun, StageSite
from parity.core.spec import Batch
from parity.tolerance import RECORDING_CONSISTENCY_BOUND, recording_consistent

PAIR_KEY = "pair"


def to_bundle(run: KerasRun) -> Bundle:
    bundle = Bundle(meta={PAIR_KEY: {
        "name": run.pair, "versions": run.versions, "stages": [vars(site) for site in run.stages],
        "cases": list(run.batches), "gradient_case": run.gradient_case, "permutation": run.permutation,
        "values": {case: {variant: list(values) for variant, values in variants.items()}
                   for case, variants in run.values.items()},
        "gradients_none": {mode: sorted(k for k, v in grads.items() if v is None) for mode, grads in run.gradients.items()},
        "gradient_variables": {mode: list(grads) for mode, grads in run.gradients.items()},
    }})
    for name, value in run.weights.items():
        bundle.add(f"weights/{name}", value, "Keras weight")
    for case, batch in run.batches.items():
        for part in ("inputs", "targets"):
            for name, value in getattr(batch, part).items():
                bundle.add(f"batch/{case}/{part}/{name}", value, f"batch {part[:-1]}")
    for case, variants in run.values.items():
        for variant, values in variants.items():
            for name, value in values.items():
                bundle.add(f"keras/{case}/{variant}/{name}", value, f"Keras {variant} value")
    for mode, grads in run.gradients.items():
        for name, value in grads.items():
            if value is not None:
                bundle.add(f"keras/gradients/{mode}/{name}", value, f"Keras gradient ({mode})")
    return bundle


def write(run: KerasRun, directory: str | Path, overwrite: bool = False) -> Path:
    return write_bundle(to_bundle(run), directory, overwrite)


def read(directory: str | Path, pair_name: str | None = None) -> KerasRun:
    """The Keras run a pair bundle holds.

    Raises:
        BundleError: not a pair bundle, recorded for another pair than `pair_name`, or incomplete.
    """
    bundle = read_bundle(directory)
    meta: dict[str, Any] | None = bundle.meta.get(PAIR_KEY)
    if not isinstance(meta, dict):
        raise BundleError(f"bundle {directory} is not a pair bundle (recorded by `record --spec`)")
    if pair_name is not None and meta["name"] != pair_name:
        raise BundleError(f"bundle {directory} was recorded for pair {meta['name']!r}, not {pair_name!r}")
    arrays = bundle.arrays
    batches = {case: Batch(bundle.group(f"batch/{case}/inputs"), bundle.group(f"batch/{case}/targets"))
               for case in meta["cases"]}
    values = {case: {variant: {name: bundle.array(f"keras/{case}/{variant}/{name}") for name in names}
                     for variant, names in meta["values"][case].items()} for case in meta["cases"]}
    gradients = {mode: {name: None if name in meta["gradients_none"][mode]
                        else bundle.array(f"keras/gradients/{mode}/{name}") for name in names}
                 for mode, names in meta["gradient_variables"].items()}
    weights = {name[len("weights/"):]: value for name, value in arrays.items() if name.startswith("weights/")}
    run = KerasRun(meta["name"], dict(meta["versions"]), weights, [StageSite(**site) for site in meta["stages"]],
                    batches, values, meta["gradient_case"], gradients,
                    {case: order for case, order in meta["permutation"].items()},
                    {"digest": bundle.digest, "directory": str(directory)})
    inconsistent = float64_inconsistencies(run)
    if inconsistent:
        raise BundleError(f"bundle {directory} is inconsistent: its float32 {inconsistent[0]} is further from its own "
                          f"float64 run than float32 arithmetic explains (more than {RECORDING_CONSISTENCY_BOUND:g} of "
                          "the value's magnitude): a float32 value that is not the original's would widen its own floor")
    return run


def _relative(value: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    error = float(np.abs(np.subtract(value, exact, dtype=np.float64)).max(initial=0.0))
    return error, float(np.abs(exact).max(initial=0.0))


def float64_inconsistencies(run: KerasRun) -> list[str]:
    """"case: value (relative error)" for each recorded float32 value (and gradient) its float64 run cannot explain."""
    found = []
    pairs = [(f"{case}: {name}", value, variants[FLOAT64][name])
             for case, variants in run.values.items() for name, value in variants[FLOAT32].items()]
    pairs += [(f"gradient: {name}", value, run.gradients[FLOAT64].get(name))
              for name, value in run.gradients.get("eager", {}).items() if value is not None]
    for name, value, exact in pairs:
        if exact is None:
            continue
        error, scale = _relative(value, exact)
        if not recording_consistent(error, scale):
            found.append(f"{name} ({error / scale if scale else float('inf'):.3g})")
    return found
