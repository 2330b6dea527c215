"""Build Keras 3 QARAC from a local HF RoBERTa directory, and compile it as the original.

Nothing is downloaded: `config.json` and `model.safetensors` are read from the directory
(`keras3_qarac.weights.load_base_weights`), never through keras-hub's `from_preset`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras3_qarac._keras import keras
from keras3_qarac.base import RobertaBase, roberta_config
from keras3_qarac.models import TRAINER_INPUTS, QaracTrainerModel

# The original's optimiser: Nadam with ExponentialDecay(1e-5, 100 steps, 0.99).
LEARNING_RATE = 1.0e-5
DECAY_STEPS = 100
DECAY_RATE = 0.99


def read_config(model_dir: Path) -> dict:
    """`config.json` of an HF RoBERTa directory, checked.

    Raises:
        FileNotFoundError: no config.json. ValueError: not JSON, or not RoBERTa.
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json; expected an HF RoBERTa directory")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    roberta_config(config)
    return config


def dummy_inputs(config: dict, batch: int = 1, length: int = 3) -> dict:
    ids = np.full((batch, length), config["pad_token_id"] + 2, dtype="int32")
    ids[:, 0] = config.get("bos_token_id", 0)
    return {name: {"input_ids": ids, "attention_mask": np.ones_like(ids)} for name in TRAINER_INPUTS}


def build_trainer(model_dir: Path, seed: int = 0, nested_tf_function: bool = True,
                  load_base: bool = True) -> QaracTrainerModel:
    """The trainer, built by one call; the bases loaded from the directory's weights.

    Args:
        seed: seeds the heads' initialisers.
        nested_tf_function: TensorFlow backend: keep the original's nested `@tf.function`s.
        load_base: load both bases from `model.safetensors` (strict).
    """
    from keras3_qarac.weights import load_base_weights

    config = read_config(model_dir)
    keras.utils.set_random_seed(seed)
    base_encoder = RobertaBase(config, is_decoder=False, name="roberta_base")
    base_decoder = RobertaBase(config, is_decoder=True, name="roberta_base_1")
    trainer = QaracTrainerModel(base_encoder, base_decoder, nested_tf_function, name="qarac_trainer_model")
    trainer(dummy_inputs(config), training=False)  # creates every variable
    if load_base:
        for base in (base_encoder, base_decoder):
            load_base_weights(base, model_dir)
    return trainer


def legacy_losses() -> dict:
    """The original's four losses, keyed by trainer output."""
    return {"encode_decode": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "question_answering": keras.losses.MeanSquaredError(),
            "reasoning": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "consistency": keras.losses.MeanSquaredError()}


def total_loss(outputs: dict, targets: dict):
    """Plain sum of the four losses (what `fit` minimises)."""
    losses = legacy_losses()
    return sum(losses[key](targets[key], outputs[key]) for key in losses)


def legacy_schedule():
    return keras.optimizers.schedules.ExponentialDecay(LEARNING_RATE, DECAY_STEPS, DECAY_RATE)
