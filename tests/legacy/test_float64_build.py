"""The legacy's float64 trainer holds exactly the port's weights, or refuses.

It is built from the config (the checkpoint is not converted a second time) and every weight is
written from the port's legacy preset; a variable the weight map does not write would keep its
random initial value and move the float64 run silently.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    from parity.legacy.record import build_legacy_pair

    tf_model, pt_legacy, weight_map = build_legacy_pair(tiny_model_dir, seed=0)
    del tf_model
    return pt_legacy, weight_map


def test_float64_trainer_holds_every_weight_of_the_port(tiny_model_dir, pair):
    from parity.bridge import tf_values_as_pt
    from parity.legacy.float64 import legacy_float64

    pt_legacy, weight_map = pair
    model = legacy_float64(tiny_model_dir, 0, pt_legacy, weight_map)
    params = dict(pt_legacy.named_parameters())
    values = dict(tf_values_as_pt(model, weight_map))
    assert set(values) == set(params)
    for name, value in values.items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, params[name].detach().numpy().astype(np.float64), err_msg=name)


def test_float64_trainer_refuses_a_weight_left_unwritten(tiny_model_dir, pair):
    from parity.legacy.float64 import legacy_float64

    pt_legacy, weight_map = pair
    left_out = weight_map.entries[-1]
    partial = dataclasses.replace(weight_map, entries=weight_map.entries[:-1])
    with pytest.raises(RuntimeError, match="not written") as error:
        legacy_float64(tiny_model_dir, 0, pt_legacy, partial)
    assert left_out.tf_name in str(error.value)
