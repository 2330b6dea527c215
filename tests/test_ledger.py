"""The enforced deviation ledger: every difference between the legacy preset and the
fixed behaviour lies in the region its option declares (qarac.config.DEVIATION_REGIONS)."""

import pytest
import torch

from model_helpers import tiny_config, trainer_batch
from parity import ledger
from qarac import LEGACY_VALUES, QaracTrainerModel
from qarac.config import DEVIATION_REGIONS, DeviationRegion


@pytest.fixture(scope="module")
def legacy_model():
    torch.manual_seed(11)
    return QaracTrainerModel(tiny_config().legacy()).eval()


@pytest.fixture(scope="module")
def batch():
    # rows of lengths 7, 6, 5, 7: some rows without padding, so the padded-rows-only regions are tested
    return trainer_batch(4, 7, padded=True, seed=2)


def test_every_option_declares_a_region():
    assert set(DEVIATION_REGIONS) == set(LEGACY_VALUES)


def test_every_difference_is_declared(legacy_model, batch):
    deviations = {d.option: d for d in ledger.measure_deviations(legacy_model, *batch)}
    assert set(deviations) == {*LEGACY_VALUES, ledger.DEFAULT_PRESET}
    assert all(d.passed and not d.ineffective for d in deviations.values()), deviations
    assert all(value == 0.0 for d in deviations.values() for value in d.unexplained_change.values())
    assert deviations[ledger.DEFAULT_PRESET].explained_change["output:question_answering"] > 1e-4
    assert deviations["loss_ignores_padding"].explained_change["loss:encode_decode"] > 0


def test_a_change_outside_the_declared_region_fails(legacy_model, batch, monkeypatch):
    # Declare the causal head as changing encode_decode only: its change to `reasoning` is then unexplained.
    narrower = dict(DEVIATION_REGIONS)
    narrower["causal_decoder_head"] = DeviationRegion(frozenset({"encode_decode"}), frozenset({"encode_decode", "reasoning", "total"}))
    monkeypatch.setattr(ledger, "DEVIATION_REGIONS", narrower)
    deviations = {d.option: d for d in ledger.measure_deviations(legacy_model, *batch)}
    causal = deviations["causal_decoder_head"]
    assert not causal.passed and causal.unexplained_change["output:reasoning"] > 1e-4


def test_an_option_that_changes_nothing_it_claims_fails(legacy_model, batch, monkeypatch):
    # A port whose encoder never hands the mask to its head: `pooling_masks_padding` has no effect left.
    from qarac.encoder import QaracEncoderModel

    monkeypatch.setattr(QaracEncoderModel, "pool", lambda self, states, mask: self.head(states, None))
    deviations = {d.option: d for d in ledger.measure_deviations(legacy_model, *batch)}
    assert deviations["pooling_masks_padding"].ineffective and not deviations["pooling_masks_padding"].passed


def test_padding_only_regions_leave_unpadded_rows_alone(legacy_model):
    inputs, targets = trainer_batch(3, 6, padded=False, seed=3)  # no padding anywhere
    deviations = {d.option: d for d in ledger.measure_deviations(legacy_model, inputs, targets)}
    pooling = deviations["pooling_masks_padding"]
    # nothing to mask: no change, and none claimed
    assert max(pooling.output_change.values()) == 0.0 and pooling.passed and not pooling.ineffective
