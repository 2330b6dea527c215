"""The port's side of the gradient checks, without TensorFlow: one forward serves the total and
every objective, and the census's statistics match a direct float64 computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_helpers import tiny_config, trainer_batch
from parity.gradients import census, reachability
from parity.port_gradients import torch_gradients, torch_gradients_and_reachability
from parity.groups import parameter_group
from qarac import QaracTrainerModel
from qarac.objectives import OBJECTIVES


@pytest.mark.parametrize("legacy", [False, True])
def test_one_forward_gives_what_separate_backwards_give(legacy):
    torch.manual_seed(0)
    model = QaracTrainerModel(tiny_config().legacy() if legacy else tiny_config()).eval()
    inputs, targets = trainer_batch()
    total, matrix = torch_gradients_and_reachability(model, inputs, targets)
    separate = torch_gradients(model, inputs, targets)
    assert total.keys() == separate.keys()
    for name, grad in separate.items():
        assert (grad is None and total[name] is None) or np.array_equal(grad, total[name]), name
    per_objective = {objective: torch_gradients(model, inputs, targets, objective) for objective in OBJECTIVES}
    assert matrix == reachability(per_objective)
    pooler = [group for group in matrix if "pooler" in group]
    assert bool(pooler) == legacy  # only the legacy preset keeps the pooler, which no objective reaches
    assert not any(any(matrix[group].values()) for group in pooler)
    assert all(any(row.values()) for group, row in matrix.items() if group not in pooler)


def test_census_statistics_match_float64():
    rng = np.random.default_rng(0)
    grads = {"decoder.decoder_head.head.dense.weight": rng.normal(size=(7, 5)).astype(np.float32),
             "decoder.decoder_head.head.dense.bias": rng.normal(size=(5,)).astype(np.float32) * 1e-3,
             "decoder.decoder_head.head.bias": np.array([np.inf, -2.0, np.nan], np.float32),
             "answer_encoder.head.global_projection": np.zeros((3, 3), np.float32),
             "question_encoder.head.local_projection": None}
    flow = census(grads, list(grads))
    assert flow.nonfinite == ["decoder.decoder_head.head.bias"]
    assert flow.zero == ["answer_encoder.head.global_projection"]
    assert flow.missing == ["question_encoder.head.local_projection"]
    assert flow.complete
    groups: dict[str, list[np.ndarray]] = {}
    for name, grad in grads.items():
        if grad is not None:
            groups.setdefault(parameter_group(name), []).append(np.abs(np.nan_to_num(grad).astype(np.float64)).ravel())
    for group, parts in groups.items():
        values = np.concatenate(parts)
        assert flow.group_stats[group]["mean_abs"] == pytest.approx(values.mean(), rel=1e-12)
        assert flow.group_stats[group]["max_abs"] == pytest.approx(values.max(), rel=1e-7)
