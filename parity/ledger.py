"""The deviation ledger: what each compatibility option changes, measured.

For every option of `qarac.config.LEGACY_VALUES`, start from the legacy preset,
switch that option alone to its fixed value, and measure how far each trainer
output and each loss moves on one fixed padded batch, same weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from qarac import LEGACY_VALUES, QaracLoss, QaracTrainerModel
from qarac.base import built_with_weights
from qarac.config import DEVIATION_REGIONS, DeviationRegion, QaracConfig

# The encoder inputs whose vectors each output is built from: a row of an output "has padding"
# for `padded_rows_only` regions when one of these inputs has padding in that row.
OUTPUT_INPUTS: Mapping[str, tuple[str, ...]] = {
    "encode_decode": ("all_text",),
    "question_answering": ("question", "answer"),
    "reasoning": ("proposition0", "proposition1"),
    "consistency": ("statement0", "statement1"),
}

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
    explained_change: dict[str, float] = field(default_factory=dict)
    unexplained_change: dict[str, float] = field(default_factory=dict)
    ineffective: bool = False
    passed: bool = True

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
        deviations.append(_switched(base_config.replace(**{option: not legacy_value}), option, [option], weights,
                                    reference_outputs, reference_losses, inputs, targets))
    # Every option at once (the default preset), on the per-call path so that only the options differ:
    # the batched path's float reordering is tested apart (tests/test_batched_trainer.py).
    deviations.append(_switched(base_config.fixed().replace(batched_calls=False), DEFAULT_PRESET,
                                list(LEGACY_VALUES), weights, reference_outputs, reference_losses, inputs, targets))
    return deviations


# --- data deviations: what the legacy's input pipeline changes (docs/legacy.md §1.5), measured ------

# Data option -> (its corrected value, what the legacy did and what switching it changes).
DATA_DEVIATIONS: Mapping[str, tuple[Any, str]] = {
    "decoder_affixes": ("single", "The original's decoder prefix and suffix were `<s> <s> </s>` and `<s> </s> </s>`: "
                                  "a three-token shift, position i trained on the token three ahead; the one-token "
                                  "shift changes both decoder inputs and targets, hence both cross-entropy losses."),
    "padding": ("batch", "The original padded every field to one length for the whole corpus; with the legacy model "
                         "padding enters the pooling sums and the cross-entropy, so per-batch padding moves every "
                         "loss on rows shorter than the corpus' longest."),
    "encoder_special_tokens": (True, "The original encoded encoder inputs without `<s>`/`</s>`; adding them changes "
                                     "every encoder vector, hence all four losses."),
}
# Rectangular batches of epoch 0 the data deviations are measured on.
DATA_DEVIATION_BATCHES = 4


@dataclass
class DataDeviation:
    """How far one data option, switched alone from the legacy pipeline to the corrected one, moves each loss.

    Measured with the legacy model (its weights, `QaracConfig.legacy()`) on the same corpus
    rows, batch by batch: `loss_change` is the largest |switched - legacy| over the batches,
    `legacy_losses` / `switched_losses` the means over them.
    """

    option: str
    legacy_value: Any
    fixed_value: Any
    batches: list[int]
    legacy_losses: dict[str, float]
    switched_losses: dict[str, float]
    loss_change: dict[str, float]
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_data_deviations(legacy_model: QaracTrainerModel, tokenizer, data_dir=None,
                            n_batches: int = DATA_DEVIATION_BATCHES, batch_size: int = 32,
                            seed: int = 0) -> list[DataDeviation]:
    """Switch each data option of `DATA_DEVIATIONS` alone and measure the losses on the same rows.

    Args:
        legacy_model: a trainer built with the legacy preset.
        tokenizer: the model's RoBERTa tokenizer.
        data_dir: the four corpus CSVs (default: the shipped samples).
        n_batches: how many rectangular batches of epoch 0 of the legacy pipeline to use.
        batch_size: 32 as in the original.
        seed: the legacy pipeline's shuffles.

    Raises:
        ValueError: the model is not the legacy preset, or the epoch has too few rectangular batches.
    """
    import dataclasses

    from qarac.data.batches import CorpusBatches, RaggedBatchError
    from qarac.data.corpora import DEFAULT_DATA_DIR, Corpora
    from qarac.data.options import DataConfig

    config = legacy_model.config
    if not config.is_legacy:
        raise ValueError("measure_data_deviations needs a model built with the legacy preset (QaracConfig.legacy())")
    corpora = Corpora.from_directory(DEFAULT_DATA_DIR if data_dir is None else data_dir)
    legacy_data_config = dataclasses.replace(DataConfig().legacy(), batch_size=batch_size)

    def data(**change):
        return CorpusBatches(corpora, tokenizer, dataclasses.replace(legacy_data_config, **change),
                             max_length=config.max_tokens, seed=seed)

    legacy_data = data()
    chosen = []
    for index, rows in enumerate(legacy_data.plan(0)):
        try:
            chosen.append((index, rows, legacy_data.build(rows, index)))
        except RaggedBatchError:
            continue
        if len(chosen) == n_batches:
            break
    if len(chosen) < n_batches:
        raise ValueError(f"epoch 0 has only {len(chosen)} rectangular legacy batches, fewer than {n_batches}")
    legacy_model.eval()
    reference = [_run(legacy_model, config, batch.inputs, batch.targets)[1] for _, _, batch in chosen]
    deviations = []
    for option, (fixed_value, explanation) in DATA_DEVIATIONS.items():
        switched_data = data(**{option: fixed_value})
        switched = [_run(legacy_model, config, b.inputs, b.targets)[1]
                    for b in (switched_data.build(rows, index) for index, rows, _ in chosen)]
        names = list(reference[0])
        deviations.append(DataDeviation(
            option=option,
            legacy_value=getattr(legacy_data_config, option),
            fixed_value=fixed_value,
            batches=[index for index, _, _ in chosen],
            legacy_losses={name: sum(r[name] for r in reference) / len(reference) for name in names},
            switched_losses={name: sum(s[name] for s in switched) / len(switched) for name in names},
            loss_change={name: max(abs(s[name] - r[name]) for s, r in zip(switched, reference)) for name in names},
            explanation=explanation,
        ))
    return deviations


def _switched(config: QaracConfig, label: str, options: list[str], weights, reference_outputs, reference_losses,
              inputs, targets) -> Deviation:
    """Run the legacy weights under `config` and hold the change against the options' declared regions."""
    try:
        # The legacy model's own tensors, shared (only read here): no 1 GB copy per option on roberta-base shapes.
        model, unexpected = built_with_weights(lambda: QaracTrainerModel(config), weights, allow_unexpected=True,
                                               share=True)
    except RuntimeError as error:
        raise RuntimeError(f"switching {label} changed the weights: {error}") from None
    if any(".pooler." not in name for name in unexpected):
        raise RuntimeError(f"switching {label} changed the weights beyond the pooler: {unexpected}")
    model = model.to(next(iter(weights.values())).device).eval()  # the buffers join the weights' device
    outputs, losses = _run(model, config, inputs, targets)
    deviation = Deviation(
        option=label,
        legacy_value=True if len(options) > 1 else LEGACY_VALUES[label],
        fixed_value=False if len(options) > 1 else not LEGACY_VALUES[label],
        output_change={name: float((outputs[name] - reference_outputs[name]).abs().max()) for name in outputs},
        loss_change={name: abs(losses[name] - reference_losses[name]) for name in losses},
        parameters_removed=len({weights[name].data_ptr() for name in unexpected}),  # shared base named twice
        explanation=EXPLANATIONS.get(label, "Every option switched at once: each change must lie in the union "
                                            "of the options' declared regions."),
    )
    enforce(deviation, [DEVIATION_REGIONS[option] for option in options], outputs, reference_outputs, losses,
            reference_losses, inputs, targets)
    return deviation


def _padded(tokens) -> np.ndarray:
    """(B,) rows holding padding."""
    return (tokens.attention_mask == 0).any(dim=1).cpu().numpy()


def _inside_rows(region: DeviationRegion, name: str, inputs, batch: int) -> np.ndarray:
    """(B,) rows of output `name` inside the region."""
    inside = np.full(batch, name in region.outputs)
    if region.padded_rows_only:
        inside &= np.any([_padded(inputs[key]) for key in OUTPUT_INPUTS[name]], axis=0)
    return inside


def enforce(deviation: Deviation, regions: list[DeviationRegion], outputs, reference_outputs, losses,
            reference_losses, inputs, targets) -> None:
    """Split each change into explained (inside a declared region) and unexplained (outside any),
    and judge: nothing unexplained, and a change somewhere the regions claim one.

    Several regions (the default preset: every option switched) explain their union.
    """
    for name, value in outputs.items():
        change = (value - reference_outputs[name]).abs().reshape(value.shape[0], -1).amax(dim=1).cpu().numpy()  # (B,)
        inside = np.any([_inside_rows(region, name, inputs, len(change)) for region in regions], axis=0)
        deviation.explained_change[f"output:{name}"] = float(change[inside].max(initial=0.0))
        deviation.unexplained_change[f"output:{name}"] = float(change[~inside].max(initial=0.0))
    any_padding = any(_padded(tokens).any() for tokens in [*inputs.values(), targets["encode_decode"],
                                                           targets["reasoning"]])
    for name, value in losses.items():
        change = abs(value - reference_losses[name])
        inside = any(name in region.losses and (any_padding or not region.padded_rows_only) for region in regions)
        deviation.explained_change[f"loss:{name}"] = change if inside else 0.0
        deviation.unexplained_change[f"loss:{name}"] = 0.0 if inside else change
    # A padded-rows-only region claims nothing of a batch without padding.
    claims_change = any((region.outputs or region.losses) and (any_padding or not region.padded_rows_only)
                        for region in regions)
    removes = any(region.parameters_removed for region in regions)
    deviation.ineffective = (claims_change and max(deviation.explained_change.values()) == 0.0) or (
        removes and deviation.parameters_removed == 0)
    deviation.passed = max(deviation.unexplained_change.values()) == 0.0 and not deviation.ineffective


def main(argv=None) -> int:
    """`python -m parity.ledger [--model DIR] [--data DIR] [--seed S]`: the data deviations as JSON."""
    import argparse
    import json
    from pathlib import Path

    from parity.inputs import tokenizer_for
    from qarac.checkpoint import read_roberta_config
    from qarac.presets import tiny_model_dir

    parser = argparse.ArgumentParser(prog="python -m parity.ledger", description=main.__doc__)
    parser.add_argument("--model", default=None, help="HF RoBERTa directory (default: the embedded tiny model)")
    parser.add_argument("--data", default=None, help="the four corpus CSVs (default: the samples)")
    parser.add_argument("--seed", type=int, default=0, help="heads' initialisation and the data's shuffles")
    args = parser.parse_args(argv)
    model_dir = Path(args.model) if args.model else tiny_model_dir()
    config = QaracConfig.from_roberta_config(read_roberta_config(model_dir)).legacy()
    torch.manual_seed(args.seed)
    model = QaracTrainerModel.from_base_model(model_dir, config)
    deviations = measure_data_deviations(model, tokenizer_for(model_dir, config), args.data, seed=args.seed)
    print(json.dumps([d.to_dict() for d in deviations], indent=2))
    return 0



DEFAULT_PRESET = "all options (default preset)"


if __name__ == "__main__":
    raise SystemExit(main())
