"""Planted porting bugs, judged by the harness's own verdict.

Each mutant is a context manager that plants one small, realistic bug in the
port for the duration of the block: a class- or module-level patch of the code
the port runs (so every model built inside, the float64 twin included, carries
it, as a bug in the port's source would), or an edit of the recorded weights
the port loads (a weight-bridge bug). Nothing on disk changes. The precision mutants
(`PRECISION_MUTANTS`, issue 32) act on the float32 path only, as autocast, TF32 or a half-precision
kernel would, leaving the float64 twin exact; the benign variants (`BENIGN`) are the port written
differently but correctly, and must pass. `evaluate` runs
the real `parity.check.check` on a `LegacyRun` (a bundle read from disk or
one just recorded: the same code) with the mutant planted, and reads the
verdict: which checks fail, the stage named, the worst error in float32 floor
units and the worst float64 relative error. There is no other judge.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from parity.check import check
from parity.planting import edited_weights as _edited_weights, patched as _patched, sdpa_replaced as _sdpa
from parity.precision_mutants import BENIGN, PRECISION_MUTANTS

# --- the verdict on a mutant --------------------------------------------------------------------

@dataclass
class MutantResult:
    """What `check` said about the port with one mutant planted.

    Attributes:
        failed: the checks that failed.
        forward_failed: the forward outputs over their bound (float32 floor verdict).
        stage: the first stage whose introduced error is over its bound, else the first over its
            bound in the real forward ("case: stage"); None where no stage is.
        worst_floor_ratio: the worst forward error (outputs and stages, every case) in floor units.
        worst_float64_rel_err: the worst float64 relative error over outputs and stages.
        float64_stage: the first stage over the float64 bound ("case: stage").
        precision_stage: the first stage whose float32 error is over the precision bound ("case: stage").
        nondeterministic_stage: the first stage whose reordered or repeated runs spread beyond the bound.
        error: the port raised instead of returning.
    """

    name: str
    failed: list[str] = field(default_factory=list)
    forward_failed: list[str] = field(default_factory=list)
    stage: str | None = None
    worst_floor_ratio: float | None = None
    worst_float64_rel_err: float | None = None
    float64_stage: str | None = None
    precision_stage: str | None = None
    nondeterministic_stage: str | None = None
    error: str | None = None

    @property
    def caught(self) -> bool:
        return bool(self.failed)

    @property
    def located(self) -> str | None:
        """The stage named: forward's, else precision's, else the spread's."""
        return self.stage or self.precision_stage or self.nondeterministic_stage

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "caught": self.caught, "located": self.located}


def verdict(name: str, report: Any) -> MutantResult:
    """Read a `ParityReport` into a `MutantResult`."""
    ratios = [c["floor_ratio"] for c in [*report.forward, *report.layers] if c.get("floor_ratio") is not None]
    ratios += [row["introduced_floor_ratio"] for rows in report.stage_errors.values() for row in rows
               if row["introduced_floor_ratio"] is not None]
    float64 = report.float64 or {}
    first64 = next((f"{case}: {stage}" for case, stage in float64.get("first_failing_stage", {}).items() if stage), None)
    precision = report.precision or {}
    return MutantResult(name, [check for check, ok in report.checks.items() if not ok],
                        [c["name"] for c in report.forward if not c["passed"]],
                        report.first_introducing_stage or report.first_failing_stage,
                        max((r for r in ratios if np.isfinite(r)), default=None) if ratios else None,
                        max((v["rel_err"] for v in float64.get("values", [])), default=None), first64,
                        precision.get("first_precision_stage"), precision.get("first_nondeterministic_stage"))


def evaluate(name: str, run: Any, device: str = "cpu") -> MutantResult:
    """Plant mutant `name`, run the real `check` on `run`, read its verdict."""
    with PLANTED[name](run):
        try:
            report = check(run, device=device)
        except Exception as error:  # noqa: BLE001 - a mutant that crashes the port is caught, and said so
            return MutantResult(name, ["port raised"], error=f"{type(error).__name__}: {error}")
    return verdict(name, report)


# --- planting (the helpers: `parity.planting`) ------------------------------------------------------

def attention_mask_dropped(run=None):
    """Inside SDPA the attention mask is not passed on (padding attended; the decoder base's causal mask too)."""
    return _sdpa(lambda sdpa, q, k, v, mask, *args, **kwargs: sdpa(q, k, v, None, *args, **kwargs))


def attention_scale(run=None, factor: float = 1.005):
    """SDPA's scale multiplied by `factor` (a softmax temperature slightly off: 1/sqrt(d) x 1.005)."""
    def scaled(sdpa, q, k, v, mask, *args, scale=None, **kwargs):
        base = scale if scale is not None else q.shape[-1] ** -0.5
        return sdpa(q, k, v, mask, *args, scale=base * factor, **kwargs)

    return _sdpa(scaled)


def attention_bfloat16(run=None):
    """Attention computed in bfloat16 (query, key, value and mask cast down, the result cast back)."""
    def low(sdpa, q, k, v, mask, *args, **kwargs):
        down = lambda t: t if t is None or not t.is_floating_point() else t.to(torch.bfloat16)  # noqa: E731
        return sdpa(down(q), down(k), down(v), down(mask), *args, **kwargs).to(q.dtype)

    return _sdpa(low)


def gelu_tanh(run=None):
    """GELU's tanh approximation (`gelu_new`) wherever the port's RoBERTa blocks and LM head apply GELU."""
    from transformers.activations import GELUActivation

    return _patched(GELUActivation, "forward",
                    lambda self, x: torch.nn.functional.gelu(x, approximate="tanh"))


def layer_norm_epsilon(run=None, epsilon: float = 1e-12):
    """Every layer norm with BERT's epsilon 1e-12 instead of RoBERTa's 1e-5."""
    return _patched(torch.nn.LayerNorm, "forward", lambda self, x: torch.nn.functional.layer_norm(
        x, self.normalized_shape, self.weight, self.bias, epsilon))


def layer_norm_without_affine(run=None):
    """Layer norms applied without their gain and bias (hidden where gains are 1 and biases 0)."""
    return _patched(torch.nn.LayerNorm, "forward", lambda self, x: torch.nn.functional.layer_norm(
        x, self.normalized_shape, None, None, self.eps))


def attention_output_bias_dropped(run=None):
    """The attention block's output projection applied without its bias (hidden where biases are 0)."""
    from transformers.models.roberta.modeling_roberta import RobertaSelfOutput

    def forward(self, hidden_states, input_tensor):
        projected = torch.nn.functional.linear(hidden_states, self.dense.weight)
        return self.LayerNorm(self.dropout(projected) + input_tensor)

    return _patched(RobertaSelfOutput, "forward", forward)


def _embeddings_with_positions(positions: Callable[[torch.Tensor, int], torch.Tensor]):
    """RobertaEmbeddings.forward given `positions(input_ids, padding_idx)` as its position ids."""
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    original = RobertaEmbeddings.forward
    signature = inspect.signature(original)

    def forward(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        input_ids = bound.arguments.get("input_ids")
        if bound.arguments.get("position_ids") is None and input_ids is not None:
            bound.arguments["position_ids"] = positions(input_ids, self.padding_idx)
        return original(*bound.args, **bound.kwargs)

    return _patched(RobertaEmbeddings, "forward", forward)


def bert_position_ids(run=None):
    """BERT-style position ids 0..T-1 for every row, not counted from padding_idx + 1 over real tokens."""
    return _embeddings_with_positions(
        lambda ids, padding: torch.arange(ids.shape[1], device=ids.device).expand_as(ids))


def position_offset(run=None):
    """Position ids counted from padding_idx instead of padding_idx + 1 (off by one: the first token
    gets the padding position's embedding)."""
    def shifted(ids, padding):
        real = (ids != padding).long()
        return torch.cumsum(real, dim=1) * real + padding - real

    return _embeddings_with_positions(shifted)


def _every_name(weights: Mapping[str, np.ndarray], name: str) -> list[str]:
    """`name` and every other name of the same parameter (the shared encoder base is recorded under
    both encoders: loading applies the last, so an edit must reach each)."""
    suffix = name.split(".", 1)[1]
    return [other for other in weights if other.split(".", 1)[-1] == suffix and other.split(".")[0] in
            ("question_encoder", "answer_encoder", name.split(".")[0])]


def transposed_projection(run):
    """The bridge forgets to transpose a square kernel (the encoder base's layer 0 query projection)."""
    name = "question_encoder.encoder.encoder.layer.0.attention.self.query.weight"
    return _edited_weights(run, lambda w: {other: np.ascontiguousarray(w[name].T) for other in _every_name(w, name)})


def swapped_weights(run):
    """The bridge swaps two same-shaped weights: the decoder base's layer 0 query and key kernels."""
    query = "decoder.decoder.encoder.layer.0.attention.self.query.weight"
    key = "decoder.decoder.encoder.layer.0.attention.self.key.weight"
    return _edited_weights(run, lambda w: {query: w[key], key: w[query]})


def l2_epsilon(run=None, size: float = 1e-10):
    """l2_normalize's floor on the squared norm changed from 1e-12 to `size`."""
    import qarac.heads

    return _patched(qarac.heads, "L2_EPSILON", size)


def cross_entropy_ignores_padding(run=None):
    """The legacy preset's cross-entropy skips padding targets (the fixed behaviour leaks in)."""
    import qarac.losses

    original = qarac.losses.sequence_cross_entropy
    return _patched(qarac.losses, "sequence_cross_entropy", lambda logits, target, ignore: original(logits, target, True))


def decoder_drops_last(run=None):
    """The decoder head drops the last position after layer_0 instead of the prepended first."""
    from qarac.heads import QaracDecoderHead

    original = QaracDecoderHead.forward

    def forward(self, vector, hidden_states, attention_mask=None):
        real_layer_0, real_layer_1 = self.layer_0, self.layer_1
        captured = {}

        def layer_0(extended, **kwargs):
            output = real_layer_0(extended, **kwargs)
            states = output[0] if isinstance(output, tuple) else output  # a tuple on transformers 4.x only
            captured["vector_state"] = states[:, :1]
            return output

        def layer_1(states, **kwargs):  # receives extended[:, 1:]; rebuild extended[:, :-1]
            return real_layer_1(torch.cat([captured["vector_state"], states[:, :-1]], dim=1), **kwargs)

        self.__dict__["layer_0"], self.__dict__["layer_1"] = layer_0, layer_1
        try:
            return original(self, vector, hidden_states, attention_mask)
        finally:
            del self.__dict__["layer_0"], self.__dict__["layer_1"]

    return _patched(QaracDecoderHead, "forward", forward)


def legacy_head_gets_mask(run=None):
    """A quirk silently fixed in the legacy preset: the encoder hands its mask to the pooling head."""
    from qarac.encoder import QaracEncoderModel

    return _patched(QaracEncoderModel, "pool", lambda self, states, mask: self.head(states, mask))


def legacy_head_causal(run=None):
    """A quirk silently fixed in the legacy preset: the decoder head's layers made causal."""
    from qarac import heads

    original = heads.additive_attention_mask
    return _patched(heads, "additive_attention_mask", lambda mask, causal, *args: original(mask, True, *args))


# name -> plant(run): every mutant the verdict is measured on (bench/mutations.py, tests/test_sharpness.py).
MUTANTS: Mapping[str, Callable[[Any], contextlib.AbstractContextManager]] = {
    "attention mask dropped inside SDPA": attention_mask_dropped,
    "attention scale x1.005": attention_scale,
    "attention in bfloat16": attention_bfloat16,
    "GELU tanh approximation": gelu_tanh,
    "layer-norm epsilon 1e-12 (BERT's)": layer_norm_epsilon,
    "layer norm without gain and bias": layer_norm_without_affine,
    "attention output bias dropped": attention_output_bias_dropped,
    "BERT-style position ids": bert_position_ids,
    "position ids one short (from padding_idx)": position_offset,
    "square projection transposed": transposed_projection,
    "two same-shaped weights swapped": swapped_weights,
    "decoder head drops the last position": decoder_drops_last,
    "legacy pooling head given the mask": legacy_head_gets_mask,
    "legacy decoder head made causal": legacy_head_causal,
    "l2-normalisation epsilon 1e-10": l2_epsilon,
    "legacy cross-entropy ignores padding": cross_entropy_ignores_padding,
}
# Everything `evaluate` can plant.
PLANTED: Mapping[str, Callable[[Any], contextlib.AbstractContextManager]] = {**MUTANTS, **PRECISION_MUTANTS, **BENIGN}
# Mutants that change no forward value by their nature, and the check that catches each instead.
NOT_FORWARD = {
    "l2-normalisation epsilon 1e-10": "l2_normalize_primitive",  # only squared norms below 1e-10 move
    "legacy cross-entropy ignores padding": "gradient_parity",  # the loss, not the forward
}
