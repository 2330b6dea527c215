"""Error introduced vs inherited per stage, backward: each PyTorch stage fed the
legacy's input to it and the legacy's upstream gradient, and the gradient it
passes on to its input compared with the legacy's.

The legacy side: one eager trainer call under a `GradientTape`, every stage's
input and output tensors captured (`parity.legacy.capture.keras_hooks`
with `keep_tensors`), then the total loss's gradient with respect to each of them:
the upstream gradient a stage receives (d loss / d output) and the one it
passes on (d loss / d input). Plain arrays, recorded once.

The PyTorch side (`parity.port_runner.stage_input_gradients`): each stage module
re-run alone on the legacy's input, with the other arguments (masks) it received
in the port's own real forward (captured by a pre-hook), backpropagating the
legacy's upstream gradient. The difference between its input gradient and the
legacy's, compared here, is the backward error that stage introduces by itself.
Shared layers are called several times per forward, so per-call parameter
gradients do not exist on the legacy side; parameter gradients are compared
whole by `parity.gradient_parity`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from parity.agreement import magnitude_scale
from parity.compare import Comparison, compare_arrays
from parity.forward import stage_mask
from parity.results import LegacyBackward


def introduced_backward(port: Mapping[str, np.ndarray], legacy: LegacyBackward, inputs: Mapping[str, Any],
                        tolerance: float) -> list[Comparison]:
    """Per stage: the port's input gradient, given the legacy's input and upstream gradient, vs the legacy's.

    Compared on real tokens; the relative scale is the legacy's largest input gradient of that stage.

    Args:
        port: stage -> the port's input gradient (`parity.results.PortRun.backward`).
    """
    results = []
    for name in legacy.order:
        reference = legacy.input_gradients[name]
        scale = magnitude_scale(reference).value  # the shared rule (parity.agreement)
        results.append(compare_arrays(name, port[name] / scale, reference / scale, tolerance, stage_mask(name, inputs)))
    return results
