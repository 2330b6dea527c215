"""Precision parity (issue 32): a port that computes in lower precision in its float32 path only (the
float64 twin untouched) can no longer explain its error by its own rounding. Judged by the real
`check` on the shipped bundles (no TensorFlow), as `qarac-parity check` runs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from parity.check import check
from parity.reference import read_reference

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "reference" / "tiny"


@pytest.fixture(scope="module")
def run():
    return read_reference(SHIPPED)


@contextlib.contextmanager
def _bfloat16_linear():
    """`torch.nn.functional.linear` computing its products in bfloat16 for float32 inputs only, as
    autocast left on would (the issue's reproduction, written here independently of the mutation suite)."""
    original = torch.nn.functional.linear

    def linear(x, weight, bias=None):
        if x.dtype != torch.float32:
            return original(x, weight, bias)
        low = original(x.bfloat16(), weight.bfloat16(), None if bias is None else bias.bfloat16())
        return low.float()

    torch.nn.functional.linear = linear
    try:
        yield
    finally:
        torch.nn.functional.linear = original


def test_a_bfloat16_linear_port_fails_forward_or_precision_with_a_stage_named(run):
    with _bfloat16_linear():
        report = check(run)
    failed = {name for name, ok in report.checks.items() if not ok}
    assert failed & {"forward", "precision"}, failed
    assert report.first_introducing_stage or report.first_failing_stage, "no stage named"


# --- the rule, against hand-computed numbers ---------------------------------------------------

def test_value_floor_counts_the_ports_rounding_only_up_to_the_allowance():
    from parity.tolerance import PRECISION_BOUND, precision_allowance, value_floor

    assert PRECISION_BOUND == 10.0
    # a faithful port: its own rounding (3e-7) is within 10 x the legacy's float32 error (2e-7)
    assert value_floor(1e-7, 2e-7, 3e-7, 2e-7) == pytest.approx(5e-7)
    # a port losing precision (1e-3): counted only up to 10 x 2e-7, the floor stays the legacy's side
    assert value_floor(1e-7, 2e-7, 1e-3, 2e-7) == pytest.approx(2e-7 + 2e-6)
    # the legacy's error below an ulp: the allowance is 10 ulps
    assert precision_allowance(1e-7, 1e-9) == pytest.approx(1e-6)
    assert value_floor(1e-7, 1e-9, 1.0, 1e-9) == pytest.approx(1e-9 + 1e-6)
    # nothing measured moves it: one ulp
    assert value_floor(1e-7, 0.0, 0.0, 0.0) == 1e-7
    # no float64 run of the legacy recorded: the allowance falls back to 10 ulps
    assert precision_allowance(1e-7, None) == pytest.approx(1e-6)
    assert value_floor(1e-7, 0.0, 5e-6, None) == pytest.approx(1e-6)


def test_precision_ratio_and_judgement():
    from parity.tolerance import precision_ratio, within_precision

    assert precision_ratio(3e-6, 1e-7, 2e-7) == pytest.approx(15.0)
    assert not within_precision(3e-6, 1e-7, 2e-7) and within_precision(2e-6, 1e-7, 2e-7)
    assert precision_ratio(5e-7, 1e-7, None) == pytest.approx(5.0)  # ulps, without a float64 run
    assert precision_ratio(0.0, 0.0, 0.0) == 0.0 and precision_ratio(1e-9, 0.0, 0.0) == float("inf")


def test_judge_case_names_the_first_stage_over_the_bound_in_execution_order():
    from parity.noise import NoiseFloors
    from parity.precision import judge_case

    stages = ["embeddings", "layer 0", "layer 1"]
    names = ["output:x", *stages]
    floors = NoiseFloors(floor={n: 1.0 for n in names}, ulp={n: 1e-7 for n in names},
                         pytorch={"output:x": {"float64": 5e-5}, "embeddings": {"float64": 1e-7, "permuted_batch": 1e-7},
                                  "layer 0": {"float64": 1e-7, "one_thread": 5e-6}, "layer 1": {"float64": 3e-5}},
                         legacy={n: {"float64": 2e-7, "permuted_batch": 0.0} for n in names})
    case = judge_case(floors, stages)
    assert [v.name for v in case.values] == names
    assert case.over == ["output:x", "layer 1"] and case.first_precision_stage == "layer 1"
    assert case.worst_ratio == pytest.approx(250.0)
    # layer 0's one-thread run moved it 5e-6 = 25 x max(legacy permuted 0, legacy error 2e-7, ulp)
    assert case.spread_over == ["layer 0"] and case.first_nondeterministic_stage == "layer 0"


# --- the port, through `check` -------------------------------------------------------------------

@pytest.mark.parametrize("bundle", [SHIPPED, ROOT / "tests" / "fixtures" / "reference-tiny-intel-xeon"],
                         ids=["reference-tiny", "intel-xeon"])
def test_the_clean_port_passes_precision_and_forward_on_both_shipped_bundles(bundle):
    from parity.tolerance import PRECISION_BOUND

    report = check(read_reference(bundle))
    assert report.passed, [name for name, ok in report.checks.items() if not ok]
    precision = report.precision
    assert precision["bound"] == PRECISION_BOUND and precision["passed"] and precision["spread_passed"]
    # measured 4.17 / 1.96 (tolerance.PRECISION_BOUND): a margin, not bit-equality
    assert precision["worst_ratio"] < PRECISION_BOUND and precision["worst_spread_ratio"] < PRECISION_BOUND
    assert precision["first_precision_stage"] is None and precision["first_nondeterministic_stage"] is None
    assert set(precision["cases"]) == {"padded", "unpadded", "max_length", "sharp"}
    # the repeated forward of the determinism check is one of the padded batch's port variants
    assert all("repeat" in variants for variants in report.noise_floors["padded"]["pytorch"].values())


def test_the_report_records_the_float32_settings_the_port_ran_with(run):
    report = check(run)
    settings = report.precision["settings"]
    assert set(settings) == {"device", "cuda_matmul_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision"}
    assert settings["device"] == "cpu" and settings["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    assert isinstance(settings["cuda_matmul_allow_tf32"], bool) and isinstance(settings["cudnn_allow_tf32"], bool)


# the precision mutant -> (a check it must fail, the stage check names: forward's, else precision's)
PRECISION_EXPECTED = {
    "linear products in bfloat16 (float32 path only)": ("precision", "padded: encoder base: layer 0 (all_text)"),
    "attention softmax in float16 (float32 path only)": ("precision", "sharp: encoder base: layer 0 (all_text)"),
    "TF32-like matmul inputs (10-bit mantissa)": ("precision", "padded: encoder base: layer 0 (all_text)"),
    "dropout active": ("spread", "padded: encoder base: embeddings (all_text)"),
}


def test_every_precision_mutant_has_an_expectation():
    from parity import mutations

    assert set(PRECISION_EXPECTED) == set(mutations.PRECISION_MUTANTS)


@pytest.mark.parametrize("name", list(PRECISION_EXPECTED))
def test_precision_mutant_fails_with_its_stage_named(run, name):
    from parity import mutations

    result = mutations.evaluate(name, run)
    assert result.error is None, result.error
    check_name, stage = PRECISION_EXPECTED[name]
    assert check_name in result.failed and {"forward", "precision"} & set(result.failed), result
    assert result.located == stage, result
    assert result.precision_stage is not None, result


BENIGN = ["benign: attention written by hand (float32)", "benign: x @ W.T + b instead of F.linear",
          "benign: layer norm written by hand", "benign: erf GELU written by hand", "benign: attention in float64, cast back"]


@pytest.mark.parametrize("name", BENIGN)
def test_benign_variant_passes_check(run, name):
    from parity import mutations

    result = mutations.evaluate(name, run)
    assert result.error is None and not result.failed, result


def test_every_benign_variant_is_tested():
    from parity import mutations

    assert set(BENIGN) == set(mutations.BENIGN)
