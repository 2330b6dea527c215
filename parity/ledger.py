"""The deviation ledger: what each compatibility option changes, measured.

For every option of `qarac.config.LEGACY_VALUES`, start from the legacy preset,
switch that option alone to its fixed value, and measure how far each trainer
output and each loss moves on one fixed padded batch, same weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch

from qarac import LEGACY_VALUES, QaracLoss, QaracTrainerModel
from qarac.config import QaracConfig

# One sentence per option: what the legacy did and what switching it fixes.
EXPLANATIONS: Mapping[str, str] = {
    "pooling_masks_padding": "The legacy pooling head never saw the mask, so padding entered both of its sums; "
                             "masking moves every encoder-derived output on padded rows.",
    "causal_decoder_head": "The legacy decoder head attended in both directions, letting position t read the state "
                           "of token t+1 it must predict; a causal head changes both decoder outputs.",
    "keep_pooler": "The RoBERTa pooler is computed but never used by QARAC, so dropping it changes no output "
                   "and removes four dead parameters per base model.",
    "loss_ignores_padding": "Keras' cross-entropy averaged over padding targets too; ignoring them changes only "
                            "the two cross-entropy losses, not any output.",
}


@dataclass
class Deviation:
    """How far one option moves the outputs and losses (max |fixed - legacy|)."""

    option: str
    legacy_value: bool
    fixed_value: bool
    output_change: dict[str, float]
    loss_change: dict[str, float]
    parameters_removed: int
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(model: QaracTrainerModel, config: QaracConfig, inputs, targets):
    with torch.no_grad():
        outputs = model(inputs)
        losses = QaracLoss(config)(outputs, targets)
    return outputs.as_dict(), losses.item()


def measure_deviations(legacy_model: QaracTrainerModel, inputs, targets) -> list[Deviation]:
    """Switch each option alone on a copy of `legacy_model`'s weights and measure the change.

    Args:
        legacy_model: a trainer built with the legacy preset (its weights are reused).
        inputs, targets: a padded batch (dicts of token batches and targets).
    """
    base_config = legacy_model.config
    if not base_config.is_legacy:
        raise ValueError("measure_deviations needs a model built with the legacy preset (QaracConfig.legacy())")
    legacy_model.eval()
    reference_outputs, reference_losses = _run(legacy_model, base_config, inputs, targets)
    weights = legacy_model.state_dict()
    deviations = []
    for option, legacy_value in LEGACY_VALUES.items():
        config = base_config.replace(**{option: not legacy_value})
        model = QaracTrainerModel(config).eval()
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if missing or any(".pooler." not in name for name in unexpected):
            raise RuntimeError(f"switching {option} changed the weights beyond the pooler: {missing} {unexpected}")
        outputs, losses = _run(model, config, inputs, targets)
        deviations.append(Deviation(
            option=option,
            legacy_value=legacy_value,
            fixed_value=not legacy_value,
            output_change={name: float((outputs[name] - reference_outputs[name]).abs().max()) for name in outputs},
            loss_change={name: abs(losses[name] - reference_losses[name]) for name in losses},
            parameters_removed=len({weights[name].data_ptr() for name in unexpected}),  # shared base named twice
            explanation=EXPLANATIONS[option],
        ))
    return deviations
