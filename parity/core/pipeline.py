"""The core's check: the port run on a recorded Keras run (torch runner), then judged.

    run = parity.core.recording.record(pair)   # TensorFlow: the original, float32 and float64
    parity.core.codec.write(run, "bundle/")    # later, anywhere, without TensorFlow:
    report = check(pair, parity.core.codec.read("bundle/", pair.name))

`parity.core.recording.live` is both in one process. The weight map is matched against both models before any
long work starts, so a spec whose table does not fit fails in seconds with the key named.
"""

from __future__ import annotations

import torch

from parity.core.judge import PairReport, compare
from parity.core.results import KerasRun
from parity.core.spec import Pair
from parity.core.torch_side import run_port, state_shapes
from parity.core.weights import Matched


def port_shapes(pair: Pair, model: torch.nn.Module | None = None) -> dict[str, tuple[int, ...]]:
    return state_shapes(pair.build_torch(torch.float32) if model is None else model)


def matched_map(pair: Pair, run: KerasRun, model: torch.nn.Module | None = None) -> Matched:
    """The spec's map applied to the recorded Keras weights and the port (raises `WeightMapError`)."""
    keras_shapes = {name: tuple(value.shape) for name, value in run.weights.items()}
    return pair.weights.match(keras_shapes, port_shapes(pair, model))


def check(pair: Pair, run: KerasRun, model: torch.nn.Module | None = None) -> PairReport:
    """The port (the spec's, or `model`) against a recorded Keras run; imports no TensorFlow."""
    matched = matched_map(pair, run, model)
    recorded = [vars(site) for site in run.stages]
    port = run_port(pair, run, matched, model)
    report = compare(pair, run, port, matched)
    report.bundle = {"digest": run.meta.get("digest"), "directory": run.meta.get("directory"), "stages": recorded}
    return report
