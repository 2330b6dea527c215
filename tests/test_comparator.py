"""The port runner and the comparator apart: the port is run once (`run_port`, a `PortRun`), and the
comparator judges that data alone, by the one forward rule (`parity.tolerance.Tolerance`)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from parity.comparator import compare
from parity.port_runner import run_port
from parity.reference import read_reference
from parity.tolerance import FLOOR_BOUND, ROBERTA_BASE_TOLERANCE, TINY_TOLERANCE, Tolerance, fixed_tolerance

SHIPPED = Path(__file__).resolve().parent.parent / "reference" / "tiny"
STAGE = "decoder base: layer 1 (offset_text)"


@pytest.fixture(scope="module")
def runs():
    run = read_reference(SHIPPED)
    return run, run_port(run)


def test_the_comparator_judges_the_port_run_alone(runs):
    """A value changed in the port's results, after the port ran, is what the verdict sees: the
    comparator reads the `PortRun`, it does not run the port again."""
    run, port = runs
    rule = Tolerance.for_model(run.meta["model_config"])
    assert compare(run, port, rule).passed
    changed = copy.deepcopy(port)
    changed.captures["padded"].stage_outputs[STAGE] = changed.captures["padded"].stage_outputs[STAGE] + 1e-3
    report = compare(run, changed, rule)
    assert not report.checks["layers"] and report.first_failing_stage == f"padded: {STAGE}", report.first_failing_stage


def test_every_forward_value_is_judged_by_the_rule_given(runs):
    """The same port run under both modes of the rule: floor units, or one fixed absolute tolerance."""
    run, port = runs
    config = run.meta["model_config"]
    floors = compare(run, port, Tolerance.for_model(config))
    assert floors.verdict == {"mode": "noise floor", "bound_in_floors": FLOOR_BOUND, "absolute_tolerance": None}
    assert all(c["tolerance"] == FLOOR_BOUND * c["noise_floor"] for c in [*floors.forward, *floors.layers])
    fixed = compare(run, port, Tolerance.for_model(config, 3e-4))
    assert fixed.verdict == {"mode": "fixed tolerance", "bound_in_floors": None, "absolute_tolerance": 3e-4}
    assert all(c["tolerance"] == 3e-4 for c in [*fixed.forward, *fixed.layers])
    assert all(c["tolerance"] == 3e-4 for c in fixed.special_cases["all_padding_row"]["real_rows"].values())


def test_the_rule_reads_back_from_its_verdict():
    tiny, base = {"hidden_size": 32, "num_hidden_layers": 2}, {"hidden_size": 768, "num_hidden_layers": 12}
    assert (fixed_tolerance(tiny), fixed_tolerance(base)) == (TINY_TOLERANCE, ROBERTA_BASE_TOLERANCE)
    for rule in (Tolerance.for_model(base), Tolerance.for_model(base, 2e-5)):
        assert Tolerance.from_verdict(rule.verdict(), base) == rule
    assert Tolerance.for_model(base).without_floors() == Tolerance(ROBERTA_BASE_TOLERANCE, None)


def test_a_value_identically_zero_on_both_sides_has_a_zero_floor_and_no_division_by_it(runs):
    """Issue 35 item 1: a value identically 0 in both legacy runs (word embeddings zeroed) and in the port
    gives a floor of exactly 0; the comparator ended in ZeroDivisionError. Equal zeros are 0 floors away;
    any error over a 0 floor is infinitely many and fails."""
    import numpy as np

    run, port = copy.deepcopy(runs[0]), copy.deepcopy(runs[1])
    name = "reasoning"
    for capture in (run.captures["padded"], run.float64.captures["padded"], port.captures["padded"]):
        capture.outputs[name] = np.zeros_like(capture.outputs[name])
    for variants in (port.noise["padded"].moved, run.legacy_floors["padded"]):
        variants[f"output:trainer.{name}"] = {v: 0.0 for v in variants.get(f"output:trainer.{name}", {})}
    rule = Tolerance.for_model(run.meta["model_config"])
    report = compare(run, port, rule)
    value = next(c for c in report.forward if c["name"] == f"padded.trainer.{name}")
    assert value["noise_floor"] == 0.0 and value["floor_ratio"] == 0.0 and value["passed"], value
    port.captures["padded"].outputs[name][0, 0, 0] = 1.0
    value = next(c for c in compare(run, port, rule).forward if c["name"] == f"padded.trainer.{name}")
    assert value["floor_ratio"] == float("inf") and not value["passed"], value
