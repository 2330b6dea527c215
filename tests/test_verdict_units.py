"""The verdict's building blocks on their own: non-finite values by kind, a gradient on one side only,
the missing sets of both sides, strict JSON for a report holding NaN/inf."""

from __future__ import annotations

import json
import math

import numpy as np

from parity.compare import compare_arrays
from parity.gradient_parity import compare_gradients
from parity.comparator import missing_sets_agree
from parity.report import json_safe


def test_nonfinite_values_agree_only_with_the_same_kind_at_the_same_place():
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    same = base.copy()
    same[0, 1], same[1, 2] = np.nan, np.inf
    assert compare_arrays("x", same, same.copy(), 1e-6).passed  # NaN where NaN, +inf where +inf
    flipped = same.copy()
    flipped[1, 2] = -np.inf
    result = compare_arrays("x", same, flipped, 1e-6)
    assert not result.passed and "(1, 2)" in result.problem and "+inf" in result.problem and "-inf" in result.problem
    result = compare_arrays("x", same, base, 1e-6)  # NaN where the legacy is finite
    assert not result.passed and "first at (0, 1): pytorch nan" in result.problem and "2 positions" in result.problem


def test_a_gradient_on_one_side_only_fails_unless_declared():
    grad = np.ones((2, 2), dtype=np.float32)
    pt = {"a": grad, "b": None, "c": None}
    tf = {"a": grad, "b": grad, "c": None}
    results = {c.name: c for c in compare_gradients(pt, tf)}
    assert results["a"].passed and "c" not in results  # missing on both sides: the census judges it
    assert not results["b"].passed and results["b"].problem == "a gradient on the legacy side only"
    declared = {c.name: c for c in compare_gradients(pt, tf, declared={"b": "known"})}
    assert declared["b"].passed and "declared: known" in declared["b"].problem
    assert not compare_gradients({"a": grad}, {})[0].passed  # named on one side only


def test_missing_sets_are_compared():
    assert missing_sets_agree(["x", "y"], ["y", "x"])
    assert not missing_sets_agree(["x"], ["x", "y"])


def test_report_json_is_strict_with_nonfinite_numbers():
    value = {"a": [1.0, math.nan, math.inf], "b": -math.inf, "c": (2, "s")}
    text = json.dumps(json_safe(value), allow_nan=False)
    assert json.loads(text) == {"a": [1.0, "nan", "inf"], "b": "-inf", "c": [2, "s"]}


def test_the_loss_keeps_float64_and_upcasts_half_precision():
    """The port's loss upcast half precision with `.float()`, which also cut a float64 run down to
    float32 (its gradients then agreed with the legacy's float64 ones to 3e-8 only)."""
    import torch

    from qarac.losses import at_least_float32

    assert at_least_float32(torch.ones(2, dtype=torch.float64)).dtype == torch.float64
    assert at_least_float32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_float32(torch.ones(2)).dtype == torch.float32
