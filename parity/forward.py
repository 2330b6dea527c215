"""Forward parity: the PyTorch legacy preset against the legacy Keras model,
output by output and then stage by stage.

Both models hold the same weights (through `parity.bridge`) and run in eval
mode (PyTorch `eval()`, Keras `training=False`): no dropout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from parity.compare import TINY_TOLERANCE, Comparison, ParityFailure, compare_arrays, compare_trees
from parity.tf_side import numpy_tree, tf_inputs, tf_tokens, tf
from qarac import QaracTrainerModel


def _mask(tokens) -> np.ndarray:
    return tokens.attention_mask.numpy()


# --- whole outputs ---------------------------------------------------------------------------

def pt_outputs(model: QaracTrainerModel, inputs: Mapping[str, Any], vector: np.ndarray) -> dict[str, np.ndarray]:
    """The compared outputs of the PyTorch side (numpy)."""
    with torch.no_grad():
        question, answer = inputs["question"], inputs["answer"]
        offset = inputs["offset_text"]
        result = {
            "question_encoder": model.question_encoder(question.input_ids, question.attention_mask),
            "answer_encoder": model.answer_encoder(answer.input_ids, answer.attention_mask),
            "decoder": model.decoder(torch.from_numpy(vector), offset.input_ids, offset.attention_mask),
            **{f"trainer.{k}": v for k, v in model(inputs).as_dict().items()},
        }
    return {name: value.numpy() for name, value in result.items()}


def tf_outputs(model: Any, inputs: Mapping[str, Any], vector: np.ndarray) -> dict[str, np.ndarray]:
    """The same outputs from the legacy model (numpy); consistency squeezed from (B, 1) to (B,)."""
    batch = tf_inputs(inputs)
    trainer = numpy_tree(model(batch, training=False))
    trainer["consistency"] = trainer["consistency"][:, 0]
    return {
        "question_encoder": np.asarray(model.question_encoder(batch["question"], training=False)),
        "answer_encoder": np.asarray(model.answer_encoder(batch["answer"], training=False)),
        "decoder": np.asarray(model.decoder((tf.constant(vector), batch["offset_text"]), training=False)),
        **{f"trainer.{k}": v for k, v in trainer.items()},
    }


def _token_masks(inputs: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.decoder": _mask(inputs["offset_text"]),
        f"{prefix}.trainer.encode_decode": _mask(inputs["offset_text"]),
        f"{prefix}.trainer.reasoning": _mask(inputs["conclusion_offset"]),
    }


def compare_outputs(pt_model: QaracTrainerModel, tf_model: Any, inputs: Mapping[str, Any], case: str,
                    tolerance: float = TINY_TOLERANCE, seed: int = 0) -> list[Comparison]:
    """Compare every output on one batch; names are `case.output`."""
    batch = inputs["offset_text"].input_ids.shape[0]
    vector = np.random.default_rng(seed).normal(size=(batch, pt_model.config.hidden_size)).astype(np.float32)
    return compare_trees(case, pt_outputs(pt_model, inputs, vector), tf_outputs(tf_model, inputs, vector),
                         tolerance, _token_masks(inputs, case))


def assert_forward_parity(pt_model: QaracTrainerModel, tf_model: Any, inputs: Mapping[str, Any],
                          tolerance: float = TINY_TOLERANCE) -> list[Comparison]:
    """For user tests: raise `ParityFailure` naming each output over tolerance.

    Both models must already hold the same weights (see `parity.bridge.copy_tf_to_pt`).
    """
    comparisons = compare_outputs(pt_model.eval(), tf_model, inputs, "forward", tolerance)
    failures = [c for c in comparisons if not c.passed]
    if failures:
        raise ParityFailure(failures)
    return comparisons


# --- stage by stage --------------------------------------------------------------------------

def _pooling_stages_pt(head, states: torch.Tensor) -> dict[str, torch.Tensor]:
    """Legacy semantics (no mask), each intermediate of SPEC 1.1."""
    global_vector = states.sum(dim=1) @ head.global_projection  # (B, H)
    local = states @ head.local_projection  # (B, T, H)
    return {"global projection": global_vector, "local projection": local, "output": head(states, None)}


def _pooling_stages_tf(head, states) -> dict[str, Any]:
    global_vector = tf.tensordot(tf.reduce_sum(states, axis=1), head.global_projection, axes=1)
    local = tf.tensordot(states, head.local_projection, axes=1)
    return {"global projection": global_vector, "local projection": local, "output": head(states)}


def pt_stages(model: QaracTrainerModel, inputs: Mapping[str, Any], vector: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage, in pipeline order, of the PyTorch legacy preset."""
    stages: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for role, encoder, tokens in (("question", model.question_encoder, inputs["question"]),
                                      ("answer", model.answer_encoder, inputs["answer"])):
            hidden = encoder.encoder(tokens.input_ids, tokens.attention_mask, output_hidden_states=True).hidden_states
            if role == "question":  # the shared base is localised once
                stages["encoder base: embeddings"] = hidden[0]
                stages.update({f"encoder base: layer {i}": h for i, h in enumerate(hidden[1:])})
            for name, value in _pooling_stages_pt(encoder.head, hidden[-1]).items():
                stages[f"{role} encoder head: {name}"] = value
        offset = inputs["offset_text"]
        decoder = model.decoder
        hidden = decoder.decoder(offset.input_ids, offset.attention_mask, output_hidden_states=True,
                                 use_cache=False).hidden_states
        stages["decoder base: embeddings"] = hidden[0]
        stages.update({f"decoder base: layer {i}": h for i, h in enumerate(hidden[1:])})
        head = decoder.decoder_head
        extended = torch.cat([torch.from_numpy(vector)[:, None], hidden[-1]], dim=1)  # (B, T+1, H)
        layer_0 = head.layer_0(extended)[0]  # legacy: no mask
        layer_1 = head.layer_1(layer_0[:, 1:])[0]
        stages["decoder head: layer_0"] = layer_0
        stages["decoder head: layer_1"] = layer_1
        stages["decoder head: LM head"] = head.head(layer_1)
    return {name: value.numpy() for name, value in stages.items()}


def tf_stages(model: Any, inputs: Mapping[str, Any], vector: np.ndarray) -> dict[str, np.ndarray]:
    """The same stages from the legacy model, through its own layers."""
    stages: dict[str, Any] = {}
    for role, encoder, tokens in (("question", model.question_encoder, inputs["question"]),
                                  ("answer", model.answer_encoder, inputs["answer"])):
        hidden = encoder.encoder(tf_tokens(tokens), output_hidden_states=True, training=False).hidden_states
        if role == "question":
            stages["encoder base: embeddings"] = hidden[0]
            stages.update({f"encoder base: layer {i}": h for i, h in enumerate(hidden[1:])})
        for name, value in _pooling_stages_tf(encoder.head, hidden[-1]).items():
            stages[f"{role} encoder head: {name}"] = value
    decoder = model.decoder
    hidden = decoder.decoder(tf_tokens(inputs["offset_text"]), output_hidden_states=True, training=False).hidden_states
    stages["decoder base: embeddings"] = hidden[0]
    stages.update({f"decoder base: layer {i}": h for i, h in enumerate(hidden[1:])})
    head = decoder.decoder_head
    extended = tf.concat([tf.constant(vector)[:, None], hidden[-1]], axis=1)
    layer_0 = head.layer_0(extended, None, None, None, None, None, False, training=False)[0]
    layer_1 = head.layer_1(layer_0[:, 1:], None, None, None, None, None, False, training=False)[0]
    stages["decoder head: layer_0"] = layer_0
    stages["decoder head: layer_1"] = layer_1
    stages["decoder head: LM head"] = head.head(layer_1)
    return {name: np.asarray(value) for name, value in stages.items()}


@dataclass
class Localisation:
    """Stage-by-stage comparison and the first stage over tolerance (None: all pass)."""

    stages: list[Comparison] = field(default_factory=list)
    first_failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [c.to_dict() for c in self.stages], "first_failure": self.first_failure}


def _stage_mask(name: str, inputs: Mapping[str, Any]) -> np.ndarray | None:
    if name.startswith("encoder base"):
        return _mask(inputs["question"])
    if name.startswith("decoder base") or name in ("decoder head: layer_1", "decoder head: LM head"):
        return _mask(inputs["offset_text"])
    if name == "decoder head: layer_0":
        mask = _mask(inputs["offset_text"])
        return np.concatenate([np.ones_like(mask[:, :1]), mask], axis=1)
    if name.endswith("local projection"):
        return _mask(inputs["question" if name.startswith("question") else "answer"])
    return None


def localise(pt_model: QaracTrainerModel, tf_model: Any, inputs: Mapping[str, Any],
             tolerance: float = TINY_TOLERANCE, seed: int = 0) -> Localisation:
    """Compare every stage and name the first (in pipeline order) over tolerance."""
    batch = inputs["offset_text"].input_ids.shape[0]
    vector = np.random.default_rng(seed).normal(size=(batch, pt_model.config.hidden_size)).astype(np.float32)
    pt, tf_values = pt_stages(pt_model, inputs, vector), tf_stages(tf_model, inputs, vector)
    result = Localisation()
    for name in pt:  # pipeline order
        comparison = compare_arrays(name, pt[name], tf_values[name], tolerance, _stage_mask(name, inputs))
        result.stages.append(comparison)
        if not comparison.passed and result.first_failure is None:
            result.first_failure = name
    return result
