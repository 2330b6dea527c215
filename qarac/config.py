"""`QaracConfig`: the one configuration object of the PyTorch QARAC.

Every legacy quirk of the Keras original (docs/legacy.md section 1) is a named boolean
option. `QaracConfig.legacy()` turns all of them on and reproduces the original
number for number; the default has all of them fixed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from qarac import _hf  # noqa: F401  (keeps TensorFlow out of the port)
from transformers import RobertaConfig

from qarac.objectives import OBJECTIVES

# Option name -> the value that reproduces the legacy Keras model.
LEGACY_VALUES: Mapping[str, bool] = MappingProxyType(
    {
        "pooling_masks_padding": False,
        "causal_decoder_head": False,
        "keep_pooler": True,
        "loss_ignores_padding": False,
    }
)



@dataclass(frozen=True)
class DeviationRegion:
    """Where switching one compatibility option from its legacy value may change results.

    `parity.ledger` enforces it: a change outside the region, or no change
    inside it, fails the parity run.

    Attributes:
        outputs: trainer outputs the option may change.
        losses: losses it may change (`total` included where any objective changes).
        padded_rows_only: changes confined to batch rows whose inputs (for outputs)
            or targets (for losses) hold padding.
        parameters_removed: whether it removes parameters (and nothing else).
    """

    outputs: frozenset = frozenset()
    losses: frozenset = frozenset()
    padded_rows_only: bool = False
    parameters_removed: bool = False


_ALL_OUTPUTS = frozenset(OBJECTIVES)
_CROSS_ENTROPY = frozenset({"encode_decode", "reasoning", "total"})

# Option -> its declared region (the legacy behaviour each reproduces is on the QaracConfig fields).
DEVIATION_REGIONS: Mapping[str, DeviationRegion] = MappingProxyType(
    {
        # Masking the pooling head changes the vector of every text with padding, and what is built on it.
        "pooling_masks_padding": DeviationRegion(_ALL_OUTPUTS, _ALL_OUTPUTS | {"total"}, padded_rows_only=True),
        # A causal decoder head changes the decoder logits only; a row without padding still changes.
        "causal_decoder_head": DeviationRegion(frozenset({"encode_decode", "reasoning"}), _CROSS_ENTROPY),
        # The pooler is never used: no result changes, four tensors per base go.
        "keep_pooler": DeviationRegion(parameters_removed=True),
        # Ignoring padding targets changes the two cross-entropy losses, only where targets hold padding.
        "loss_ignores_padding": DeviationRegion(losses=_CROSS_ENTROPY, padded_rows_only=True),
    }
)

# Keys of a RobertaConfig that describe the architecture; the rest of an HF
# config.json (architectures, transformers_version, ...) is not ours to carry.
_BASE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


@dataclass(frozen=True)
class QaracConfig:
    """Configuration shared by every QARAC module.

    Attributes:
        base: architecture of the RoBERTa base models (the keys of an HF
            `RobertaConfig`); the encoder base and the decoder base share it,
            the decoder base adding `is_decoder=True`.
        pooling_masks_padding: the pooling head uses the attention mask in both
            of its sums. Legacy (False): the legacy encoder never hands the mask
            to its head, so padding positions enter the global sum and the
            attention-weighted sum, and padding changes the encoder vector.
        causal_decoder_head: the decoder head's two transformer layers get a
            causal mask combined with the padding mask. Legacy (False): they get
            no mask, so in teacher forcing position t sees the base model's state
            at t+1, which encodes the very token it must predict.
        keep_pooler: the base models carry RoBERTa's pooler. Legacy (True): the
            pooler exists but QARAC never uses it, so its four tensors are dead
            parameters that can never receive a gradient.
        loss_ignores_padding: the cross-entropy objectives average over real
            target tokens only. Legacy (False): Keras' sparse categorical
            cross-entropy averages over every position, padding included.
        attn_implementation: attention kernel of the RoBERTa blocks ("sdpa" or
            "eager"); both compute the same function.
        batched_calls: the trainer runs its seven encoder inputs through the
            shared base as one padded batch, and its two decoder inputs as
            another, instead of nine separate calls; same results within float
            tolerance. Used only where padding cannot change a result, i.e. when
            `pooling_masks_padding` and `causal_decoder_head` are both True
            (see `QaracTrainerModel.uses_batched_calls`); legacy semantics
            always take the per-call path.
    """

    base: Mapping[str, Any] = field(default_factory=dict)
    pooling_masks_padding: bool = True
    causal_decoder_head: bool = True
    keep_pooler: bool = False
    loss_ignores_padding: bool = True
    attn_implementation: str = "sdpa"
    batched_calls: bool = True

    def __post_init__(self) -> None:
        if not self.base:
            raise ValueError("QaracConfig needs `base`, the RoBERTa architecture (e.g. from qarac.presets)")
        missing = [key for key in ("vocab_size", "hidden_size", "num_attention_heads") if key not in self.base]
        if missing:
            raise ValueError(f"QaracConfig.base lacks {missing}; expected the keys of a RobertaConfig")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}")
        object.__setattr__(self, "base", MappingProxyType(dict(self.base)))

    # --- presets -------------------------------------------------------------
    def legacy(self) -> "QaracConfig":
        """This config with every compatibility option set as the legacy had it."""
        return dataclasses.replace(self, **LEGACY_VALUES)

    def fixed(self) -> "QaracConfig":
        """This config with every compatibility option set to the corrected behaviour."""
        return dataclasses.replace(self, **{name: not value for name, value in LEGACY_VALUES.items()})

    @property
    def is_legacy(self) -> bool:
        return all(getattr(self, name) == value for name, value in LEGACY_VALUES.items())

    def replace(self, **changes: Any) -> "QaracConfig":
        return dataclasses.replace(self, **changes)

    # --- derived sizes -------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.base["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.base["vocab_size"])

    @property
    def pad_token_id(self) -> int:
        return int(self.base.get("pad_token_id", 1))

    @property
    def bos_token_id(self) -> int:
        return int(self.base.get("bos_token_id", 0))

    @property
    def eos_token_id(self) -> int:
        return int(self.base.get("eos_token_id", 2))

    @property
    def max_tokens(self) -> int:
        """Longest sequence the position table allows: RoBERTa numbers positions
        from `pad_token_id + 1`, so `max_position_embeddings - pad_token_id - 1`."""
        return int(self.base.get("max_position_embeddings", 514)) - self.pad_token_id - 1

    def roberta_config(self, is_decoder: bool = False) -> RobertaConfig:
        """The HF config of a base model (the decoder base has `is_decoder=True`)."""
        config = RobertaConfig(**dict(self.base), is_decoder=is_decoder, add_cross_attention=False)
        config._attn_implementation = self.attn_implementation
        return config

    @classmethod
    def from_roberta_config(cls, roberta: RobertaConfig, **options: Any) -> "QaracConfig":
        if getattr(roberta, "model_type", None) != "roberta":
            raise ValueError(f"expected a RoBERTa config (model_type 'roberta'), got model_type {roberta.model_type!r}")
        base = {key: getattr(roberta, key) for key in _BASE_KEYS if hasattr(roberta, key)}
        return cls(base=base, **options)

    # --- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["base"] = dict(self.base)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QaracConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown QaracConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
