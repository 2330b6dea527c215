"""The ledger's data deviations (parity.ledger.measure_data_deviations) on the sample corpora."""

from __future__ import annotations

import pytest
import torch

from parity.inputs import tokenizer_for
from parity.ledger import DATA_DEVIATIONS, measure_data_deviations
from qarac import QaracConfig, QaracTrainerModel
from qarac.checkpoint import read_roberta_config


@pytest.fixture(scope="module")
def deviations(tiny_model_dir):
    config = QaracConfig.from_roberta_config(read_roberta_config(tiny_model_dir)).legacy()
    torch.manual_seed(0)
    model = QaracTrainerModel.from_base_model(tiny_model_dir, config)
    return {d.option: d for d in measure_data_deviations(model, tokenizer_for(tiny_model_dir, config),
                                                         n_batches=2, batch_size=8)}


def test_every_data_option_measured_on_the_same_batches(deviations):
    assert set(deviations) == set(DATA_DEVIATIONS)
    assert len({tuple(d.batches) for d in deviations.values()}) == 1
    assert len({tuple(sorted(d.legacy_losses.items())) for d in deviations.values()}) == 1


def test_the_shift_moves_only_the_decoder_losses(deviations):
    shift = deviations["decoder_affixes"]
    assert (shift.legacy_value, shift.fixed_value) == ("post_processor", "single")
    assert shift.loss_change["question_answering"] == 0.0 and shift.loss_change["consistency"] == 0.0
    assert shift.loss_change["encode_decode"] > 0 and shift.loss_change["reasoning"] > 0


def test_padding_and_special_tokens_move_the_encoder_losses(deviations):
    # The legacy pooling head sums over padding, and <s>/</s> are two more tokens in its sums.
    for option in ("padding", "encoder_special_tokens"):
        assert deviations[option].loss_change["question_answering"] > 1e-3, option
        assert deviations[option].loss_change["consistency"] > 0, option


def test_needs_the_legacy_model(tiny_model_dir):
    config = QaracConfig.from_roberta_config(read_roberta_config(tiny_model_dir))
    with pytest.raises(ValueError, match="legacy preset"):
        measure_data_deviations(QaracTrainerModel(config), None)
