"""Error introduced vs inherited per stage, backward: each PyTorch stage fed the
legacy's input to it and the legacy's upstream gradient, and the gradient it
passes on to its input compared with the legacy's.

The legacy side: one eager trainer call under a `GradientTape`, every stage's
input and output tensors captured (`parity.legacy.capture.keras_hooks`
with `keep_tensors`), then the total loss's gradient with respect to each of them:
the upstream gradient a stage receives (d loss / d output) and the one it
passes on (d loss / d input). Plain arrays, recorded once.

The PyTorch side: each stage module re-run alone on the legacy's input, with
the other arguments (masks) it received in the port's own real forward
(captured by a pre-hook), backpropagating the legacy's upstream gradient. The
difference between its input gradient and the legacy's is the backward error
that stage introduces by itself. Shared layers are called several times per
forward, so per-call parameter gradients do not exist on the legacy side;
parameter gradients are compared whole by `parity.gradient_parity`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from parity.agreement import magnitude_scale
from parity.capture import capture_torch, torch_stage_modules
from parity.compare import Comparison, compare_arrays
from parity.forward import stage_mask
from parity.results import LegacyBackward
from parity.stages import stage_site


def introduced_backward(pt_model: Any, legacy: LegacyBackward, inputs: Mapping[str, Any],
                        tolerance: float, calls: Mapping[str, tuple[tuple, dict]] | None = None) -> list[Comparison]:
    """Per stage: the port's input gradient, given the legacy's input and upstream gradient, vs the legacy's.

    Compared on real tokens; the relative scale is the legacy's largest input gradient of that stage.

    Args:
        calls: the stages' arguments in a forward of `pt_model` on `inputs` already run
            (`parity.capture.capture_torch`'s `arguments`); None runs one.
    """
    if calls is None:
        calls = {}
        capture_torch(pt_model, inputs, arguments=calls)
    modules = torch_stage_modules(pt_model)
    results = []
    for name in legacy.order:
        args, kwargs = calls[name]
        device = next(pt_model.parameters()).device
        stage_input = torch.tensor(legacy.stage_inputs[name], dtype=torch.float32, device=device, requires_grad=True)
        output = modules[stage_site(name)](stage_input, *args[1:], **kwargs)
        output = output[0] if isinstance(output, (tuple, list)) else output
        upstream = torch.tensor(np.array(legacy.upstream[name]), dtype=output.dtype, device=device)
        # Only the input's gradient: the parameters' (the LM head's alone is V x H) are not computed.
        (input_gradient,) = torch.autograd.grad(output, stage_input, upstream)
        reference = legacy.input_gradients[name]
        scale = magnitude_scale(reference).value  # the shared rule (parity.agreement)
        comparison = compare_arrays(name, input_gradient.cpu().numpy() / scale, reference / scale, tolerance,
                                    stage_mask(name, inputs))
        results.append(comparison)
    return results
