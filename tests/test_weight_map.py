"""parity.core.weights: the table applied strictly, each layout against numpy from its definition,
the reverse direction and the gradients' adjoint checked as formulas."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.pairs import IDENTITY, TRANSPOSE, Layout, Rule, WeightMap, WeightMapError, gate_blocks, split_sum

KERAS = {"dense_{}/kernel".format(i): (3, 5) for i in range(2)} | {"dense_0/bias": (5,), "dense_1/bias": (5,)}
TORCH = {"layers.{}.weight".format(i): (5, 3) for i in range(2)} | {"layers.0.bias": (5,), "layers.1.bias": (5,),
                                                                    "norm.num_batches_tracked": ()}
TABLE = WeightMap(rules=(Rule("dense_{}/kernel", "layers.{}.weight", TRANSPOSE), Rule("dense_{}/bias", "layers.{}.bias")),
                  torch_only=("norm.num_batches_tracked",))


def arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def test_indices_carry_across_and_every_name_is_matched_once():
    matched = TABLE.match(KERAS, TORCH)
    assert {e.keras: e.torch for e in matched.entries} == {
        ("dense_0/kernel",): ("layers.0.weight",), ("dense_1/kernel",): ("layers.1.weight",),
        ("dense_0/bias",): ("layers.0.bias",), ("dense_1/bias",): ("layers.1.bias",)}
    assert matched.torch_kept == ["norm.num_batches_tracked"]
    keras = arrays(KERAS)
    torch_arrays = matched.to_torch(keras)
    np.testing.assert_array_equal(torch_arrays["layers.1.weight"], keras["dense_1/kernel"].T)
    assert matched.round_trip(keras) == []


@pytest.mark.parametrize("keras, torch, table, message", [
    ({**KERAS, "extra/kernel": (2,)}, TORCH, TABLE, "1 Keras variables that no rule maps: 'extra/kernel'"),
    (KERAS, {**TORCH, "head.weight": (2,)}, TABLE, "1 torch keys that no rule maps and torch_only does not declare: 'head.weight'"),
    ({**KERAS, "dense_1/kernel": (3, 4)}, TORCH, TABLE, "dense_1/kernel (3, 4) becomes [(4, 3)] through 'transposed', but the port holds layers.1.weight (5, 3)"),
    (KERAS, TORCH, WeightMap(TABLE.rules + (Rule("dense_0/bias", "layers.0.bias"),), TABLE.torch_only), "mapped twice"),
    (KERAS, TORCH, WeightMap((Rule("dense_{}/kernel", "layer.{}.weight", TRANSPOSE),) + TABLE.rules[1:]), "names torch key 'layer.0.weight'"),
    (KERAS, TORCH, WeightMap((Rule(("dense_{}/kernel", "dense_{}/scale"), "layers.{}.weight", TRANSPOSE),) + TABLE.rules[1:]), "needs Keras variable 'dense_0/scale'"),
])
def test_a_table_that_does_not_fit_names_the_key(keras, torch, table, message):
    with pytest.raises(WeightMapError, match=None) as raised:
        table.match(keras, torch)
    assert message in str(raised.value)


def test_a_dropped_variable_is_listed_not_copied():
    table = WeightMap(TABLE.rules + (Rule("extra/kernel", None),), TABLE.torch_only)
    matched = table.match({**KERAS, "extra/kernel": (2,)}, TORCH)
    assert matched.dropped == ["extra/kernel"] and "extra/kernel" not in matched.to_keras(matched.to_torch(
        arrays({**KERAS, "extra/kernel": (2,)})))


def test_a_lossy_layout_fails_the_round_trip():
    halves = Layout("float16 (lossy)", lambda a: (a.astype(np.float16).astype(np.float32),), lambda a: (a,))
    table = WeightMap((Rule("dense_{}/kernel", "layers.{}.weight", TRANSPOSE), Rule("dense_{}/bias", "layers.{}.bias", halves)),
                      TABLE.torch_only)
    assert table.match(KERAS, TORCH).round_trip(arrays(KERAS)) == ["dense_0/bias", "dense_1/bias"]


@settings(max_examples=25, deadline=None)
@given(order=st.permutations("zrh"), units=st.integers(1, 4), inputs=st.integers(1, 4))
def test_gate_blocks_reorder_like_numpy_and_invert(order, units, inputs):
    keras = np.arange(inputs * 3 * units, dtype=np.float32).reshape(inputs, 3 * units)
    layout = gate_blocks("zrh", "".join(order))
    (torch_value,) = layout.to_torch(keras)
    blocks = {gate: keras[:, i * units:(i + 1) * units] for i, gate in enumerate("zrh")}
    np.testing.assert_array_equal(torch_value, np.concatenate([blocks[g] for g in order], axis=1).T)
    np.testing.assert_array_equal(layout.to_keras(torch_value)[0], keras)


@pytest.mark.parametrize("layout, shapes", [(TRANSPOSE, [(3, 5)]), (IDENTITY, [(4,)]), (split_sum(2), [(6,)]),
                                            (split_sum(3), [(6,)]), (gate_blocks("ifco", "icfo"), [(2, 8)])])
def test_gradients_travel_by_the_adjoint_of_torch_to_keras(layout, shapes):
    """<to_keras(t), g> = <t, gradients_to_torch(g)> for every torch value t and Keras gradient g: the
    loss reads the Keras value, so that is how its gradient reaches each torch parameter."""
    rng = np.random.default_rng(3)
    keras_probe = [rng.standard_normal(shape) for shape in shapes]
    torch_values = [rng.standard_normal(v.shape) for v in layout.to_torch(*keras_probe)]
    gradient = [rng.standard_normal(shape) for shape in shapes]
    lhs = sum(float(np.sum(a * b)) for a, b in zip(layout.to_keras(*torch_values), gradient))
    rhs = sum(float(np.sum(a * b)) for a, b in zip(torch_values, layout.gradients_to_torch(*gradient)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_split_sum_keeps_the_sum_and_the_adjoint_is_not_the_inverse():
    bias = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    ih, hh = split_sum(2).to_torch(bias)
    np.testing.assert_array_equal(ih + hh, bias)
    np.testing.assert_array_equal(split_sum(2).to_keras(ih, hh)[0], bias)
    assert [g.tolist() for g in split_sum(2).gradients_to_torch(bias)] == [bias.tolist(), bias.tolist()]
