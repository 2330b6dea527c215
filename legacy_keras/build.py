"""Build the legacy models from a local RoBERTa checkpoint directory, and compile as the original.

The base models are loaded here, outside the trainer, as the original did: the
encoder base first (`tf_roberta_model`), then the decoder base
(`tf_roberta_model_1`), so the variable names match the seed's warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from legacy_keras._tf import RobertaConfig, TFRobertaModel, keras, tf
from legacy_keras.models import (
    TRAINER_INPUTS,
    QaracDecoderModel,
    QaracEncoderModel,
    QaracTrainerModel,
    max_tokens,
)

PT_WEIGHTS = ("model.safetensors",)
# Pickled PyTorch weights can run code when loaded: never read them by default.
PICKLED_WEIGHTS = ("pytorch_model.bin",)
TF_WEIGHTS = ("tf_model.h5",)

# The original's optimiser: Nadam with ExponentialDecay(1e-5, 100 steps, 0.99).
LEARNING_RATE = 1.0e-5
DECAY_STEPS = 100
DECAY_RATE = 0.99


def default_model_dir() -> Path:
    """The project's embedded tiny RoBERTa (built on first use)."""
    from qarac.presets import tiny_model_dir

    return tiny_model_dir()


def read_config(model_dir: str | os.PathLike) -> RobertaConfig:
    """Reads and checks a RoBERTa checkpoint directory's config.

    Raises:
        FileNotFoundError: if the directory or its config.json is missing.
        ValueError: if config.json is not JSON or not a RoBERTa config.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist; pass a local HF RoBERTa directory")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json; expected an HF RoBERTa checkpoint directory")
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type != "roberta":
        raise ValueError(f"{model_dir} holds a {model_type!r} model (config.json model_type); QARAC needs 'roberta'")
    return RobertaConfig.from_pretrained(model_dir)


@contextlib.contextmanager
def only_file(model_dir: Path, weights: str):
    """A temporary directory holding a link to `model_dir / weights` alone, for a loader that
    would otherwise choose among the weight files it finds."""
    with tempfile.TemporaryDirectory(prefix="qarac-weights-") as staging:
        os.symlink((model_dir / weights).resolve(), Path(staging) / weights)
        yield staging


def load_base_model(model_dir: str | os.PathLike, is_decoder: bool = False, load_weights: bool = True) -> TFRobertaModel:
    """Loads a `TFRobertaModel` (pooler included) from PyTorch or TF weights.

    Args:
        model_dir: an HF RoBERTa directory with model.safetensors,
            (loaded with `from_pt=True`) or tf_model.h5; pickled `pytorch_model.bin`
            is refused (convert it to safetensors).
        is_decoder: build the causal decoder base.
        load_weights: False: built from the config alone, as `from_pretrained` builds it (the same
            variables, names and shapes), holding initial values, for a caller that writes every
            weight itself (the float64 legacy: converting the checkpoint again is the slow part).

    Raises:
        FileNotFoundError: missing directory, config or weights.
        ValueError: not RoBERTa, weights that cannot be read, or missing,
            unexpected or wrong-shaped tensors in model.safetensors.
    """
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    config.is_decoder = is_decoder
    config.add_cross_attention = False
    if not load_weights:
        model = TFRobertaModel(config)
        model.build_in_name_scope()
        return model
    tf_weights = [name for name in TF_WEIGHTS if (model_dir / name).is_file()]
    pt_weights = [name for name in PT_WEIGHTS if (model_dir / name).is_file()]
    if not tf_weights and not pt_weights:
        pickled = [name for name in PICKLED_WEIGHTS if (model_dir / name).is_file()]
        if pickled:
            raise ValueError(f"{model_dir} holds only pickled weights {pickled}, which are not loaded "
                             "(unpickling can run code); convert them to model.safetensors")
        raise FileNotFoundError(
            f"{model_dir} has no weights: expected one of {list(TF_WEIGHTS + PT_WEIGHTS)}"
        )
    weights = tf_weights[0] if tf_weights else pt_weights[0]
    if not tf_weights:
        from qarac.base_weights import check_base_weights

        # from_pt would initialise a missing tensor randomly and only warn: refuse it first.
        check_base_weights(model_dir, config, pooler=True)
    try:
        # The file chosen above, and no other: `from_pt=True` takes a pickled pytorch_model.bin beside
        # the checked safetensors first, and a TF load prefers model.safetensors to tf_model.h5.
        # (transformers 4.57's `use_safetensors=True` with `from_pt=False` fails on PyTorch safetensors.)
        with only_file(model_dir, weights) as source:
            return TFRobertaModel.from_pretrained(source, config=config, from_pt=not tf_weights)
    except Exception as error:  # safetensors, h5py and torch raise their own types
        raise ValueError(f"could not load the weights in {model_dir / weights}: {type(error).__name__}: {error}") from error


def build_encoder(model_dir=None, *, base_model=None, fix_local_projection_gradient: bool = False,
                  seed: int = 0) -> QaracEncoderModel:
    """An encoder (base + pooling head), built by one call on a dummy input."""
    keras.utils.set_random_seed(seed)
    base_model = base_model if base_model is not None else load_base_model(model_dir or default_model_dir())
    encoder = QaracEncoderModel(base_model, fix_local_projection_gradient)
    encoder(_dummy_tokens(base_model.config), training=False)
    return encoder


def build_decoder(model_dir=None, *, base_model=None, seed: int = 0) -> QaracDecoderModel:
    """A decoder (causal base + decoder head), built by one call on a dummy input."""
    keras.utils.set_random_seed(seed)
    base_model = base_model if base_model is not None else load_base_model(model_dir or default_model_dir(), True)
    decoder = QaracDecoderModel(base_model)
    dummy = _dummy_tokens(base_model.config)
    decoder((tf.zeros((dummy["input_ids"].shape[0], base_model.config.hidden_size)), dummy), training=False)
    return decoder


def build_trainer(model_dir=None, *, seed: int = 0, fix_local_projection_gradient: bool = False,
                  compile: bool = True, reset_names: bool = True, load_weights: bool = True) -> QaracTrainerModel:
    """The legacy trainer, built (and compiled as the original unless `compile=False`).

    Args:
        model_dir: HF RoBERTa directory; default the embedded tiny model.
        seed: seeds the heads' initialisers (the base weights come from the checkpoint).
        fix_local_projection_gradient: the smallest fix of the lost gradient (off: faithful).
        compile: compile with the original losses and optimiser.
        reset_names: clear Keras' name counters first, so the variables are
            named exactly as in the seed (`tf_roberta_model`, `tf_roberta_model_1`,
            `qarac_trainer_model`, ...) however many models the process built before.
        load_weights: False: the bases are not loaded from the checkpoint (`load_base_model`).
    """
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    read_config(model_dir)  # fail early, before touching Keras state
    if reset_names:
        keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    base_encoder = load_base_model(model_dir, is_decoder=False, load_weights=load_weights)
    base_decoder = load_base_model(model_dir, is_decoder=True, load_weights=load_weights)
    trainer = QaracTrainerModel(base_encoder, base_decoder, fix_local_projection_gradient)
    inputs, _ = synthetic_batch(base_encoder.config, batch_size=1, seq_len=3, seed=seed)
    trainer(inputs, training=False)  # creates the heads' variables under the trainer's name scope
    if compile:
        compile_like_original(trainer)
    return trainer


def legacy_losses() -> dict:
    """The original's four losses, keyed by trainer output."""
    return {
        "encode_decode": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "question_answering": keras.losses.MeanSquaredError(),
        "reasoning": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "consistency": keras.losses.MeanSquaredError(),
    }


def legacy_optimizer():
    """Nadam with ExponentialDecay(1e-5, 100, 0.99), as the original."""
    schedule = keras.optimizers.schedules.ExponentialDecay(LEARNING_RATE, DECAY_STEPS, DECAY_RATE)
    return keras.optimizers.Nadam(learning_rate=schedule)


def compile_like_original(trainer: QaracTrainerModel, **compile_kwargs) -> QaracTrainerModel:
    """Compiles with the four losses (plain sum) and the original optimiser."""
    trainer.compile(optimizer=legacy_optimizer(), loss=legacy_losses(), **compile_kwargs)
    return trainer


def objective_losses(outputs: dict, targets: dict) -> dict:
    """Each of the four legacy losses, keyed by trainer output."""
    return {name: loss(targets[name], outputs[name]) for name, loss in legacy_losses().items()}


def total_loss(outputs: dict, targets: dict):
    """Plain sum of the four legacy losses (what `fit` minimises)."""
    return tf.add_n(list(objective_losses(outputs, targets).values()))


def _dummy_tokens(config, batch_size: int = 1, seq_len: int = 3) -> dict:
    ids = np.full((batch_size, seq_len), config.pad_token_id + 2 if config.vocab_size > 4 else 0, dtype=np.int32)
    ids[:, 0] = config.bos_token_id
    return {"input_ids": tf.constant(ids), "attention_mask": tf.ones_like(tf.constant(ids))}


def synthetic_batch(config, batch_size: int = 2, seq_len: int = 7, seed: int = 0):
    """A tiny random batch shaped like the legacy trainer's data.

    Each text is `<s> words </s>` padded with `<pad>`; `offset_text` and
    `conclusion_offset` are `<s> words` and their targets `words </s>` (teacher
    forcing, shifted by one; padding positions keep the pad id, which the legacy
    cross-entropy does not ignore). Row lengths vary, so padding is present.

    Returns:
        (inputs, targets): inputs keyed by `TRAINER_INPUTS`, each a dict of
        int32 `input_ids`/`attention_mask` (B, seq_len); targets keyed by
        trainer output: encode_decode / reasoning (B, seq_len) int32,
        question_answering (B, H) zeros, consistency (B, 1) in {-1, 0, 1}.
    """
    if seq_len < 3 or seq_len > max_tokens(config):
        raise ValueError(f"seq_len must lie in [3, {max_tokens(config)}], got {seq_len}")
    rng = np.random.default_rng(seed)
    low = max(config.bos_token_id, config.pad_token_id, config.eos_token_id) + 1

    def words(length):
        return rng.integers(low, config.vocab_size, size=length).tolist()

    def pad(rows):
        ids = np.full((batch_size, seq_len), config.pad_token_id, dtype=np.int32)
        mask = np.zeros((batch_size, seq_len), dtype=np.int32)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask

    def lengths():
        return [int(seq_len - 2 - (row % (seq_len - 2))) for row in range(batch_size)]  # 1..seq_len-2 words

    inputs, targets = {}, {}
    for key in TRAINER_INPUTS:
        if key in ("offset_text", "conclusion_offset"):
            continue
        texts = [words(n) for n in lengths()]
        ids, mask = pad([[config.bos_token_id, *text, config.eos_token_id] for text in texts])
        inputs[key] = {"input_ids": ids, "attention_mask": mask}
        if key in ("all_text", "proposition0"):
            offset_key = "offset_text" if key == "all_text" else "conclusion_offset"
            target_key = "encode_decode" if key == "all_text" else "reasoning"
            if key == "proposition0":
                texts = [words(n) for n in lengths()]  # the conclusion
            offset_ids, offset_mask = pad([[config.bos_token_id, *text] for text in texts])
            target_ids, _ = pad([[*text, config.eos_token_id] for text in texts])
            inputs[offset_key] = {"input_ids": offset_ids, "attention_mask": offset_mask}
            targets[target_key] = target_ids
    targets["question_answering"] = np.zeros((batch_size, config.hidden_size), dtype=np.float32)
    targets["consistency"] = rng.choice(np.array([-1.0, 0.0, 1.0], dtype=np.float32), size=(batch_size, 1))
    inputs = {key: {k: tf.constant(v) for k, v in inputs[key].items()} for key in TRAINER_INPUTS}
    targets = {key: tf.constant(value) for key, value in targets.items()}
    return inputs, targets
