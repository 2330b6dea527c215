"""How sharp the parity harness is: planted porting bugs are caught and located,
the noise-floor verdict holds on the clean port, and the float64 run that sizes
the noise cannot hide a bug of the port."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the `legacy` extra (TensorFlow + tf-keras)")

from parity import mutations  # noqa: E402
from parity.capture import capture_keras, capture_torch  # noqa: E402
from parity.harness import build_models  # noqa: E402
from parity.inputs import sample_batch  # noqa: E402
from parity.noise import FLOOR_BOUND, legacy_floor_variants, measure_floors  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    tf_model, pt_legacy, _, weight_map = build_models(tiny_model_dir)
    batch = sample_batch(tiny_model_dir, pt_legacy.config, batch_size=3)
    return mutations.Models(tf_model, pt_legacy, weight_map, batch)


@pytest.fixture(scope="module")
def record(models):
    return mutations.record_legacy(models)


def test_clean_port_passes_every_check(models, record):
    result = mutations.run_checks(models, record)
    assert not result.failed, result


# mutant -> (a check that must fail, the stage that must be named first, or None where no stage can be:
# the loss and the l2 primitive sit outside the forward's stages)
EXPECTED = {
    "square projection transposed": ("layers (padded)", "padded: encoder base: layer 0 (all_text)"),
    "l2-normalisation epsilon": ("l2_normalize primitive", None),
    "GELU tanh approximation": ("forward (sharp)", "sharp: encoder base: layer 0 (all_text)"),
    "layer-norm epsilon (relative change)": ("forward (padded)", "padded: encoder base: embeddings (all_text)"),
    "position ids offset by one": ("forward (padded)", "padded: encoder base: embeddings (all_text)"),
    "padding mask value (-size)": ("forward (sharp)", "sharp: encoder base: layer 0 (all_text)"),
    "LM head untied": ("gradient parity", None),
    "legacy cross-entropy ignores padding": ("gradient parity", None),
    "two same-shaped weights swapped": ("forward (padded)", "padded: decoder base: layer 0 (offset_text)"),
    "decoder head drops the last position": ("layers (padded)", "padded: decoder head: layer_1 (offset_text)"),
    "legacy pooling head given the mask": ("layers (padded)", "padded: answer encoder head: output (all_text)"),
    "legacy decoder head made causal": ("layers (padded)", "padded: decoder head: layer_0 (offset_text)"),
}
# A planted size each check must catch (mutants with a size; measured sizes in bench/README.md).
SIZES = {"l2-normalisation epsilon": 1e-10, "layer-norm epsilon (relative change)": 1e-2,
         "padding mask value (-size)": 10.0}


def test_every_listed_mutant_has_an_expectation():
    assert set(EXPECTED) == set(mutations.MUTANTS)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_mutant_is_caught_and_located(models, record, name):
    plant, sizes = mutations.MUTANTS[name]
    check, stage = EXPECTED[name]
    with plant(models.pt_legacy, SIZES[name]) if sizes else plant(models.pt_legacy):
        result = mutations.run_checks(models, record)
    assert check in result.failed, result
    if stage is not None:
        assert result.stage == stage, result


def test_every_mutant_is_gone_again(models, record):
    """Runs after the mutants (file order): planting restored everything."""
    assert not mutations.run_checks(models, record).failed


def test_glue_bugs_are_named_by_the_real_forward(models, record):
    """Bugs between components change only what the real forward feeds a stage: with the legacy's own
    input fed in, every stage is clean (no introduced error), yet the real forward names the stage."""
    with mutations.decoder_drops_last(models.pt_legacy):
        result = mutations.run_checks(models, record)
    assert result.stage == "padded: decoder head: layer_1 (offset_text)" and result.introducing_stage is None


def test_float64_oracle_cannot_hide_a_port_bug(models):
    """The floors come from the port's own float64 run, which shares the port's code: with a bug
    planted, float32 and float64 carry the same bug, the floors stay at rounding size, and the
    comparison with the legacy is still far over the bound."""
    inputs = models.batch.inputs
    legacy = capture_keras(models.tf_model, inputs)
    with mutations.swapped_weights(models.pt_legacy):
        pt = capture_torch(models.pt_legacy, inputs)
        floors = measure_floors(models.pt_legacy, inputs, pt, legacy,
                                legacy_floor_variants(models.tf_model, inputs, legacy)).floor
    stage = "decoder base: layer 0 (offset_text)"
    assert floors[stage] < 1e-5  # rounding noise, not the bug
    error = np.abs(pt.stage_outputs[stage] - legacy.stage_outputs[stage]).max()
    assert error > 10 * FLOOR_BOUND * floors[stage]


def test_gradient_census_notices_a_skipped_parameter():
    from parity.gradients import census

    expected = ["decoder.decoder_head.head.bias", "decoder.decoder_head.head.dense.weight"]
    flow = census({"decoder.decoder_head.head.dense.weight": np.ones((2, 2))}, expected)
    assert not flow.complete and flow.not_covered == ["decoder.decoder_head.head.bias"]
    assert census({name: np.ones(1) for name in expected}, expected).complete


def test_tolerance_constants_are_the_measured_ones():
    """Loosening a tolerance is a change of evidence, not of code: each constant is pinned to the
    value its comment justifies from measurements (README, bench/README.md)."""
    from parity.compare import TINY_TOLERANCE
    from parity.gradient_parity import GRADIENT_TOLERANCE, NOISE_FRACTION
    from parity.harness import ROBERTA_BASE_TOLERANCE
    from parity.training import TRAINING_TOLERANCE

    assert (TINY_TOLERANCE, ROBERTA_BASE_TOLERANCE) == (1e-5, 1e-4)
    assert (GRADIENT_TOLERANCE, NOISE_FRACTION, TRAINING_TOLERANCE) == (1e-4, 1e-6, 1e-4)
    assert FLOOR_BOUND == 8.0


def test_backward_error_is_located_at_the_stage_that_introduces_it(models):
    """A bug only the backward pass shows (layer_1's residual detached: same forward, lost gradient)
    is named by feeding each stage the legacy's input and upstream gradient."""
    import torch

    from parity.backward import introduced_backward, legacy_backward

    inputs, targets = models.batch.inputs, models.batch.targets
    legacy = legacy_backward(models.tf_model, inputs, targets)
    clean = introduced_backward(models.pt_legacy, legacy, inputs, 1e-4)
    assert all(c.passed for c in clean) and len(clean) == len(legacy.order)
    before = capture_torch(models.pt_legacy, inputs).outputs["encode_decode"]
    output = models.pt_legacy.decoder.decoder_head.layer_1.output
    original = output.forward
    output.forward = lambda hidden, residual: original(hidden, residual.detach())
    try:
        with torch.no_grad():  # the forward is unchanged
            assert np.array_equal(capture_torch(models.pt_legacy, inputs).outputs["encode_decode"], before)
        planted = introduced_backward(models.pt_legacy, legacy, inputs, 1e-4)
    finally:
        del output.forward
    assert next(c.name for c in planted if not c.passed) == "decoder head: layer_1 (offset_text)"


def test_output_failing_with_no_stage_failing_is_a_localisation_failure(models, record, monkeypatch):
    """A bug in glue no stage covers (the trainer's cosine) fails an output while every stage passes:
    the comparison reports the output as unlocated, which fails the harness's `localised` check."""
    import qarac.trainer

    from parity.forward import compare_captures

    original = qarac.trainer.cosine
    monkeypatch.setattr(qarac.trainer, "cosine", lambda a, b: 0.99 * original(a, b))
    inputs = models.batch.inputs
    pt = capture_torch(models.pt_legacy, inputs)
    result = compare_captures(pt, record.captures["padded"], inputs, "padded", floors=record.floors["padded"],
                              bound=FLOOR_BOUND)
    assert result.first_failure is None and result.unlocated == ["padded.trainer.consistency"]
