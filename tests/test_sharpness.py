"""How sharp the parity verdict is: planted porting bugs, judged by the real `check` on the shipped
bundle (no TensorFlow), fail forward parity naming the stage that introduces them; the clean port
passes; the float64 check resolves what float32 cannot; the float64 twin cannot hide a port bug."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parity import mutations
from parity.exactness import FLOAT64_BOUND
from parity.check import check
from parity.tolerance import FLOOR_BOUND
from parity.reference import read_reference

SHIPPED = Path(__file__).resolve().parent.parent / "reference" / "tiny"


@pytest.fixture(scope="module")
def run():
    return read_reference(SHIPPED)


# mutant -> the stage `check` must name ("case: stage"; the first introducing one, else the first over
# its bound in the real forward), or None for the mutants that move no forward value by nature
# (`mutations.NOT_FORWARD`, caught by the check named there).
EXPECTED = {
    "attention mask dropped inside SDPA": "padded: encoder base: layer 0 (all_text)",
    "attention scale x1.005": "sharp: encoder base: layer 0 (all_text)",
    "attention in bfloat16": "padded: encoder base: layer 0 (all_text)",
    "GELU tanh approximation": "padded: decoder head: LM head (offset_text)",
    "layer-norm epsilon 1e-12 (BERT's)": "padded: encoder base: embeddings (all_text)",
    "layer norm without gain and bias": "sharp: encoder base: embeddings (all_text)",
    "attention output bias dropped": "sharp: encoder base: layer 0 (all_text)",
    "BERT-style position ids": "padded: encoder base: embeddings (all_text)",
    "position ids one short (from padding_idx)": "padded: encoder base: embeddings (all_text)",
    "square projection transposed": "padded: encoder base: layer 0 (all_text)",
    "two same-shaped weights swapped": "padded: decoder base: layer 0 (offset_text)",
    "decoder head drops the last position": "padded: decoder head: layer_1 (offset_text)",
    "legacy pooling head given the mask": "padded: answer encoder head: output (all_text)",
    "legacy decoder head made causal": "padded: decoder head: layer_0 (offset_text)",
    "l2-normalisation epsilon 1e-10": None,
    "legacy cross-entropy ignores padding": None,
}
# The table: bugs inside the fused attention path, each once judged forward-equal.
ATTENTION = ("attention mask dropped inside SDPA", "attention scale x1.005", "attention in bfloat16")


def test_every_mutant_has_an_expectation():
    assert set(EXPECTED) == set(mutations.MUTANTS)
    assert {name for name, stage in EXPECTED.items() if stage is None} == set(mutations.NOT_FORWARD)


def _judged(run, name):
    result = mutations.evaluate(name, run)
    assert result.error is None, result.error
    return result


def _assert_caught_and_located(result, name):
    stage = EXPECTED[name]
    if stage is None:
        assert mutations.NOT_FORWARD[name] in result.failed, result
        return
    assert "forward" in result.failed and result.forward_failed, result  # forward parity itself, not a side check
    assert result.stage == stage, result
    assert result.worst_floor_ratio > FLOOR_BOUND and result.worst_float64_rel_err > FLOAT64_BOUND


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_bugs_fail_forward_parity_naming_the_stage(run, name):
    _assert_caught_and_located(_judged(run, name), name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in EXPECTED if name not in ATTENTION])
def test_mutant_fails_naming_the_stage(run, name):
    _assert_caught_and_located(_judged(run, name), name)


def test_clean_port_passes_both_verdicts_and_every_mutant_is_gone_again(run):
    with mutations.attention_mask_dropped(run):
        pass
    report = check(run)
    assert report.passed, [name for name, ok in report.checks.items() if not ok]
    assert report.float64["passed"] and report.float64["worst"] < FLOAT64_BOUND / 10


def test_float64_check_resolves_what_float32_cannot(run):
    """The attention scale off by 1e-6: inside float32 rounding (the floor verdict passes), far over
    float64 round-off (the float64 check fails, naming the stage)."""
    with mutations.attention_scale(run, 1 + 1e-6):
        result = mutations.verdict("scale 1e-6", check(run))
    assert not result.forward_failed, result
    assert "float64_exactness" in result.failed and result.float64_stage.endswith(": encoder base: layer 0 (all_text)")


def test_special_initial_values_are_moved_off_in_the_sharpened_set(run):
    """Zero biases and unit layer-norm gains hide a dropped bias or an ignored gain: the sharpened
    set moves every such parameter off its constant, deterministically."""
    import torch

    from parity.port import build_port
    from parity.sharp import sharpened_weights

    model, _ = build_port(run)
    constant = {name for name, p in model.named_parameters() if p.dim() == 1 and bool((p == p[0]).all())}
    assert any(name.endswith("LayerNorm.weight") for name in constant)
    assert any(name.endswith("dense.bias") for name in constant)
    with sharpened_weights(model):
        first = {name: p.detach().clone() for name, p in model.named_parameters()}
        assert not any(bool((first[name] == first[name][0]).all()) for name in constant)
    with sharpened_weights(model):
        assert all(torch.equal(first[name], p) for name, p in model.named_parameters())


def test_port_producing_nan_gets_a_full_report_naming_the_first_stage(run):
    """A NaN weight in the decoder base's layer 1: check does not stop; the report names the stage,
    and its JSON is strict (non-finite numbers as strings)."""
    import json

    from parity.report import report_json

    name = "decoder.decoder.encoder.layer.1.attention.self.query.weight"
    original = run.weights[name]
    planted = original.copy()
    planted[0, 0] = np.nan
    run.weights[name] = planted
    try:
        report = check(run)
    finally:
        run.weights[name] = original
    assert not report.checks["forward"]
    assert report.first_failing_stage == "padded: decoder base: layer 1 (offset_text)"
    layer = next(c for c in report.layers if c["name"] == "decoder base: layer 1 (offset_text)")
    assert "non-finite values differ" in layer["problem"] and "pytorch nan" in layer["problem"]
    json.loads(report_json(report), parse_constant=lambda constant: pytest.fail(f"non-JSON {constant}"))


def test_tolerance_constants_are_the_measured_ones():
    """Loosening a tolerance is a change of evidence, not of code: each constant is pinned to the
    value its comment justifies from measurements (README, bench/README.md)."""
    from parity.gradient_parity import GRADIENT_TOLERANCE, NOISE_FRACTION
    from parity.tolerance import ROBERTA_BASE_TOLERANCE, TINY_TOLERANCE
    from parity.training import TRAINING_TOLERANCE

    assert (TINY_TOLERANCE, ROBERTA_BASE_TOLERANCE) == (1e-5, 1e-4)
    assert (GRADIENT_TOLERANCE, NOISE_FRACTION, TRAINING_TOLERANCE) == (1e-4, 1e-6, 1e-4)
    assert (FLOOR_BOUND, FLOAT64_BOUND) == (2.0, 1e-11)


def test_gradient_census_notices_a_skipped_parameter():
    from parity.gradients import census

    expected = ["decoder.decoder_head.head.bias", "decoder.decoder_head.head.dense.weight"]
    flow = census({"decoder.decoder_head.head.dense.weight": np.ones((2, 2))}, expected)
    assert not flow.complete and flow.not_covered == ["decoder.decoder_head.head.bias"]
    assert census({name: np.ones(1) for name in expected}, expected).complete


def test_output_failing_with_no_stage_failing_is_a_localisation_failure(run, monkeypatch):
    """A bug in glue no stage covers (the trainer's cosine) fails an output while every stage passes:
    the report names the output as unlocated, which fails the `localised` check."""
    import qarac.trainer

    original = qarac.trainer.cosine
    monkeypatch.setattr(qarac.trainer, "cosine", lambda a, b: 0.99 * original(a, b))
    report = check(run)
    assert not report.checks["localised"]
    assert report.localisation["padded"] == {"first_failing_stage": None,
                                             "unlocated_outputs": ["padded.trainer.consistency"]}
