"""For users' own tests: check a copy of the port against a reference bundle, without TensorFlow.

    from parity.testing import assert_matches_reference

    def test_my_port_matches_the_legacy():
        model = MyQaracTrainer(QaracConfig(base=...).legacy())   # the legacy preset
        assert_matches_reference(model, "reference/tiny")

The bundle's weights are loaded into `model` (strictly: same parameter names and
shapes as `qarac.QaracTrainerModel`), then its outputs on every recorded batch and
its gradients of the total loss are compared with the legacy's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from parity.compare import Comparison, ParityFailure, _structural_failure, compare_arrays
from parity.gradient_parity import compare_gradients
from parity.gradients import torch_gradients
from parity.record import read_reference

# The cases whose outputs are compared (the all-padding row is compared by `check` only).
OUTPUT_CASES = ("padded", "unpadded", "max_length")
# Default forward tolerance, relative to each output's largest legacy magnitude (at least 1):
# on the tiny model the question-answering difference reaches |20| on the max-length batch,
# where two float32 libraries differ by 1.1e-5 (5e-7 relative; transformers 5.24 + torch 2.13
# against the recording on 4.57 + TF 2.21).
RELATIVE_TOLERANCE = 1e-5
TOKEN_OUTPUTS = {"encode_decode": "offset_text", "reasoning": "conclusion_offset"}


def assert_matches_reference(model: torch.nn.Module, bundle: str | Path, tolerance: float | None = None,
                             gradients: bool = True) -> list[Any]:
    """Raise `ParityFailure` naming every output or gradient of `model` that differs from the bundle's legacy.

    Args:
        model: a trainer in the legacy preset with `QaracTrainerModel`'s parameter names; its
            weights are replaced by the bundle's.
        bundle: a reference bundle directory (`qarac-parity record`).
        tolerance: absolute forward tolerance; default `RELATIVE_TOLERANCE` times each output's
            largest legacy magnitude (at least 1).
        gradients: also compare the gradients of the total loss with the legacy's eager ones.

    Returns: every comparison made (forward `Comparison`s, then gradient comparisons).

    Raises:
        BundleError: the bundle is unreadable, edited or incomplete.
        RuntimeError: the bundle's weights do not fit `model`.
        ParityFailure: some output or gradient is over tolerance.
    """
    run = read_reference(Path(bundle))
    state = {name: torch.from_numpy(np.array(value)) for name, value in run.weights.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    comparisons: list[Any] = []
    with torch.no_grad():
        for case in OUTPUT_CASES:
            outputs = model(run.inputs[case]).as_dict()
            for name, legacy in run.captures[case].outputs.items():
                token = TOKEN_OUTPUTS.get(name)
                mask = run.inputs[case][token].attention_mask.numpy() if token else None
                bound = tolerance if tolerance is not None else RELATIVE_TOLERANCE * max(1.0, float(np.abs(legacy).max()))
                comparisons.append(compare_arrays(f"{case}.{name}", outputs[name].numpy(), legacy, bound, mask))
    if gradients:
        comparisons.extend(compare_gradients(torch_gradients(model, run.inputs["padded"], run.targets),
                                             run.gradients["tf/eager"]))
    failures = [c if isinstance(c, Comparison) else _gradient_failure(c) for c in comparisons if not c.passed]
    if failures:
        raise ParityFailure(failures)
    return comparisons


def _gradient_failure(comparison: Any) -> Comparison:
    return _structural_failure(f"gradient of {comparison.name}", f"relative error {comparison.max_rel_err:.3g} "
                               f"over tolerance {comparison.tolerance:.3g}", comparison.tolerance)
