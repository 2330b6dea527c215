"""Planted porting bugs, to measure how sharp the harness is.

Each mutant is a context manager that plants one small, realistic bug in the
PyTorch side (monkeypatching or editing weights in memory, never files) and
undoes it on exit. `run_checks` runs the harness's checks against legacy
results recorded once from a clean run (`LegacyRecord`: captures and
gradients as plain arrays), so a mutant costs only PyTorch work. A mutant is
caught when some check fails; the result names the checks and, for forward
checks, the first stage whose introduced error is over its bound.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from parity import forward, gradient_parity, gradients
from parity.capture import Capture, capture_keras
from parity.noise import FLOOR_BOUND, legacy_floor_variants, measure_floors
from parity.sharp import sharpened


@dataclass
class LegacyRecord:
    """What the legacy computed on the harness's batch, recorded once: plain data.

    Attributes:
        captures: case ("padded", "sharp") -> the legacy's captured forward.
        floors: case -> noise floor per value, measured on the clean port.
        gradients: the legacy's eager gradients of the total loss, by canonical PyTorch name.
        parameters: every canonical parameter name of the legacy-preset model.
    """

    captures: dict[str, Capture]
    floors: dict[str, dict[str, float]]
    gradients: dict[str, np.ndarray | None]
    parameters: list[str]
    l2_probe: tuple[np.ndarray, np.ndarray]  # (vectors, the legacy's tf.math.l2_normalize of them)


@dataclass
class Models:
    tf_model: Any
    pt_legacy: Any
    weight_map: Any
    batch: Any


def record_legacy(models: Models) -> LegacyRecord:
    """Run the legacy once per case (and its gradients) on the clean models."""
    from parity.capture import capture_torch
    from parity.tf_side import tf_gradients

    captures, floors = {}, {}
    for case in ("padded", "sharp"):
        with _weights_for(case, models):
            captures[case] = capture_keras(models.tf_model, models.batch.inputs)
            pt = capture_torch(models.pt_legacy, models.batch.inputs)
            legacy_noise = legacy_floor_variants(models.tf_model, models.batch.inputs, captures[case])
            floors[case] = measure_floors(models.pt_legacy, models.batch.inputs, pt, captures[case], legacy_noise).floor
    grads = gradient_parity.to_pt_names(tf_gradients(models.tf_model, models.batch.inputs, models.batch.targets,
                                                     "eager"), models.weight_map)
    return LegacyRecord(captures, floors, grads, [entry.pt_name for entry in models.weight_map.entries],
                        legacy_l2_probe())


def l2_probe_vectors() -> np.ndarray:
    """Vectors with squared norms from 1e-20 to 1e4: `l2_normalize`'s floor matters only for the small ones,
    which no realistic forward produces, so the pooling head's primitive is compared on its own."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(13, 8))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return (directions * np.logspace(-10, 2, 13)[:, None]).astype(np.float32)


def legacy_l2_probe() -> tuple[np.ndarray, np.ndarray]:
    from legacy_keras._tf import tf

    vectors = l2_probe_vectors()
    return vectors, np.asarray(tf.math.l2_normalize(tf.constant(vectors), axis=1))


def primitives_agree(probe: tuple[np.ndarray, np.ndarray]) -> bool:
    """The port's l2_normalize matches the legacy's on the probe vectors (within 4 float32 ulps of 1)."""
    from qarac.heads import l2_normalize

    vectors, legacy = probe
    port = l2_normalize(torch.from_numpy(vectors)).numpy()
    return bool(np.abs(port - legacy).max() <= 4 * np.finfo(np.float32).eps)


def _weights_for(case: str, models: Models):
    return sharpened(models.pt_legacy, models.tf_model, models.weight_map) if case == "sharp" else contextlib.nullcontext()


@dataclass
class CheckResult:
    """Which checks a (possibly mutated) port fails, and where."""

    failed: list[str] = field(default_factory=list)
    stage: str | None = None  # first stage over its bound in the real forward ("case: stage")
    introducing_stage: str | None = None  # first stage whose introduced error is over its bound
    error: str | None = None  # the port raised instead of returning

    @property
    def caught(self) -> bool:
        return bool(self.failed)


def run_checks(models: Models, record: LegacyRecord) -> CheckResult:
    """The harness's forward, localisation, gradient-census and gradient-parity checks on the port."""
    result = CheckResult()
    inputs = models.batch.inputs
    try:
        for case in ("padded", "sharp"):
            with _weights_for(case, models):
                legacy = record.captures[case]
                pt = forward.capture_torch(models.pt_legacy.eval(), inputs)
                compared = forward.compare_captures(pt, legacy, inputs, case, floors=record.floors[case],
                                                    bound=FLOOR_BOUND)
                introduced = forward.introduced_errors(models.pt_legacy, legacy, inputs,
                                                       floors=record.floors[case], bound=FLOOR_BOUND)
            if any(not c.passed for c in compared.outputs):
                result.failed.append(f"forward ({case})")
            if compared.first_failure:
                result.failed.append(f"layers ({case})")
                result.stage = result.stage or f"{case}: {compared.first_failure}"
            first = next((c.name for c in introduced if not c.passed), None)
            if first and result.introducing_stage is None:
                result.introducing_stage = f"{case}: {first}"
        if not primitives_agree(record.l2_probe):
            result.failed.append("l2_normalize primitive")
        pt_grads = gradients.torch_gradients(models.pt_legacy, inputs, models.batch.targets)
        flow = gradients.census(pt_grads, record.parameters)
        if not flow.complete:
            result.failed.append("gradient census")
        if any(not c.passed for c in gradient_parity.compare_gradients(pt_grads, record.gradients)) \
                or set(pt_grads) != set(record.gradients):
            result.failed.append("gradient parity")
    except Exception as error:  # noqa: BLE001 - a mutant that crashes the port is caught, and said so
        result.failed.append("port raised")
        result.error = f"{type(error).__name__}: {error}"
    return result


# --- the mutants --------------------------------------------------------------------------------

def _patch(owner: Any, name: str, value: Any) -> contextlib.AbstractContextManager:
    @contextlib.contextmanager
    def patched() -> Iterator[None]:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        setattr(owner, name, value)
        try:
            yield
        finally:
            setattr(owner, name, original)
    return patched()


@contextlib.contextmanager
def _edited_parameter(model, name: str, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    parameter = dict(model.named_parameters())[name]
    original = parameter.detach().clone()
    with torch.no_grad():
        parameter.copy_(edit(original))
    try:
        yield
    finally:
        with torch.no_grad():
            parameter.copy_(original)


def transposed_projection(model, size=None):
    """The bridge forgets to transpose a square kernel (layer 0's query projection)."""
    return _edited_parameter(model, "question_encoder.encoder.encoder.layer.0.attention.self.query.weight",
                             lambda w: w.T.contiguous())


def l2_epsilon(model, size: float = 1e-6):
    """l2_normalize's floor on the squared norm changed from 1e-12 to `size`."""
    import qarac.heads

    return _patch(qarac.heads, "L2_EPSILON", size)


@contextlib.contextmanager
def gelu_tanh(model, size=None) -> Iterator[None]:
    """GELU's tanh approximation (`gelu_new`) in every transformer layer of the port."""
    from transformers.activations import ACT2FN

    layers = [m for m in model.modules() if type(m).__name__ == "RobertaIntermediate"]
    originals = [m.intermediate_act_fn for m in layers]
    for module in layers:
        module.intermediate_act_fn = ACT2FN["gelu_new"]
    try:
        yield
    finally:
        for module, original in zip(layers, originals):
            module.intermediate_act_fn = original


@contextlib.contextmanager
def layer_norm_epsilon(model, size: float = 1e-3) -> Iterator[None]:
    """Every layer norm's epsilon multiplied by (1 + size) (1e-5 -> 1e-5 (1 + size))."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    originals = [m.eps for m in norms]
    for module in norms:
        module.eps = module.eps * (1 + size)
    try:
        yield
    finally:
        for module, original in zip(norms, originals):
            module.eps = original


def position_offset(model, size=None):
    """Position ids counted from padding_idx + 2 instead of + 1 (off by one)."""
    import transformers.models.roberta.modeling_roberta as roberta

    original = roberta.create_position_ids_from_input_ids

    def shifted(input_ids, padding_idx, past_key_values_length=0):
        ids = original(input_ids, padding_idx, past_key_values_length)
        return ids + (ids != padding_idx).long()

    return _patch(roberta, "create_position_ids_from_input_ids", shifted)


def padding_mask_value(model, size: float = 1e4):
    """The encoder's additive padding mask is -size instead of the dtype's minimum."""
    import transformers.models.roberta.modeling_roberta as roberta

    original = roberta._prepare_4d_attention_mask_for_sdpa

    def weak(mask, dtype, tgt_len=None):
        additive = original(mask, dtype, tgt_len)
        return None if additive is None else additive / torch.finfo(dtype).min * -size

    return _patch(roberta, "_prepare_4d_attention_mask_for_sdpa", weak)


@contextlib.contextmanager
def untied_lm_head(model, size=None) -> Iterator[None]:
    """The LM head gets its own copy of the word embeddings instead of sharing them."""
    head = model.decoder.decoder_head.head
    tied = head.decoder.weight
    head.decoder.weight = torch.nn.Parameter(tied.detach().clone())
    try:
        yield
    finally:
        head.decoder.weight = tied


def cross_entropy_ignores_padding(model, size=None):
    """The legacy preset's cross-entropy skips padding targets (the fixed behaviour leaks in)."""
    import qarac.losses

    original = qarac.losses.sequence_cross_entropy
    return _patch(qarac.losses, "sequence_cross_entropy", lambda logits, target, ignore: original(logits, target, True))


def swapped_weights(model, size=None):
    """The bridge swaps two same-shaped weights: layer 0's query and key kernels."""
    query = "decoder.decoder.encoder.layer.0.attention.self.query.weight"
    key = "decoder.decoder.encoder.layer.0.attention.self.key.weight"
    parameters = dict(model.named_parameters())
    query_value, key_value = parameters[query].detach().clone(), parameters[key].detach().clone()
    stack = contextlib.ExitStack()
    stack.enter_context(_edited_parameter(model, query, lambda w: key_value))
    stack.enter_context(_edited_parameter(model, key, lambda w: query_value))
    return stack


def decoder_drops_last(model, size=None):
    """The decoder head drops the last position after layer_0 instead of the prepended first."""
    from qarac.heads import QaracDecoderHead

    original = QaracDecoderHead.forward

    def forward(self, vector, hidden_states, attention_mask=None):
        real_layer_1 = self.layer_1

        def layer_1(states, **kwargs):  # receives extended[:, 1:]; rebuild extended[:, :-1]
            return real_layer_1(torch.cat([captured["vector_state"], states[:, :-1]], dim=1), **kwargs)

        captured = {}
        real_layer_0 = self.layer_0

        def layer_0(extended, **kwargs):
            output = real_layer_0(extended, **kwargs)
            captured["vector_state"] = output[0][:, :1]
            return output

        self.__dict__["layer_0"], self.__dict__["layer_1"] = layer_0, layer_1
        try:
            return original(self, vector, hidden_states, attention_mask)
        finally:
            del self.__dict__["layer_0"], self.__dict__["layer_1"]

    return _patch(QaracDecoderHead, "forward", forward)


def legacy_head_gets_mask(model, size=None):
    """A quirk silently fixed in the legacy preset: the encoder hands its mask to the pooling head."""
    from qarac.encoder import QaracEncoderModel

    return _patch(QaracEncoderModel, "pool", lambda self, states, mask: self.head(states, mask))


def legacy_head_causal(model, size=None):
    """A quirk silently fixed in the legacy preset: the decoder head's layers made causal."""
    from qarac import heads

    original = heads.additive_attention_mask
    return _patch(heads, "additive_attention_mask",
                  lambda mask, causal, *args: original(mask, True, *args))


# name -> (plant, sizes to scan from the least to the most visible, or None)
MUTANTS: Mapping[str, tuple[Callable[..., Any], tuple[float, ...] | None]] = {
    "square projection transposed": (transposed_projection, None),
    "l2-normalisation epsilon": (l2_epsilon, (1e-11, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0)),
    "GELU tanh approximation": (gelu_tanh, None),
    "layer-norm epsilon (relative change)": (layer_norm_epsilon, (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)),
    "position ids offset by one": (position_offset, None),
    "padding mask value (-size)": (padding_mask_value, (1e6, 1e4, 1e3, 1e2, 10.0, 1.0)),
    "LM head untied": (untied_lm_head, None),
    "legacy cross-entropy ignores padding": (cross_entropy_ignores_padding, None),
    "two same-shaped weights swapped": (swapped_weights, None),
    "decoder head drops the last position": (decoder_drops_last, None),
    "legacy pooling head given the mask": (legacy_head_gets_mask, None),
    "legacy decoder head made causal": (legacy_head_causal, None),
}


@dataclass
class MutantResult:
    name: str
    caught: bool
    checks: list[str]
    stage: str | None
    introducing_stage: str | None
    smallest_caught_size: float | None  # the least visible planted size caught (None: no size)
    sizes: dict[str, list[str]] = field(default_factory=dict)  # size -> checks failing at it


def evaluate(name: str, models: Models, record: LegacyRecord) -> MutantResult:
    """Plant one mutant (each size, when it has sizes) and run the checks."""
    plant, sizes = MUTANTS[name]
    if sizes is None:
        with plant(models.pt_legacy):
            result = run_checks(models, record)
        return MutantResult(name, result.caught, result.failed, result.stage, result.introducing_stage, None)
    per_size, smallest, first = {}, None, None
    for size in sizes:
        with plant(models.pt_legacy, size):
            result = run_checks(models, record)
        per_size[f"{size:g}"] = result.failed
        if result.caught and smallest is None:
            smallest, first = size, result
    first = first or CheckResult()
    return MutantResult(name, smallest is not None, first.failed, first.stage, first.introducing_stage, smallest,
                        per_size)
