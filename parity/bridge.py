"""The weight bridge: every legacy TF variable <-> a PyTorch parameter.

The mapping is data. `COMPONENTS` pairs each legacy sub-object with the
PyTorch module holding the same weights; inside a component, RoBERTa-style
names go through transformers' own TF->PT name converter (it knows
`layer_._0` -> `layer.0`, `kernel` -> `weight` transposed, `gamma` -> `weight`,
`embeddings` -> `weight`), and the few QARAC-only names through `NAME_TABLE`.
The PT->TF direction is the inverse of the resulting name map, never written
twice. Every shape is checked before anything is copied; anything left
unmapped is reported and, when copying, raised as an error naming it.

Layouts: a Keras Dense kernel is (in, out) and a torch Linear weight is
(out, in), so kernels are transposed. The pooling head's projections are
applied as `X @ G` on both sides and stored (H_in, H_out) on both sides: they
are copied as they are (`NOT_TRANSPOSED`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from qarac import _hf  # noqa: F401

# (legacy attribute path, PyTorch module path). The answer encoder's base is the
# question encoder's base on both sides (shared), so it appears once.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("question_encoder.encoder", "question_encoder.encoder"),
    ("question_encoder.head", "question_encoder.head"),
    ("answer_encoder.head", "answer_encoder.head"),
    ("decoder.decoder", "decoder.decoder"),
    ("decoder.decoder_head", "decoder.decoder_head"),
)

# Names the converter does not know: legacy inner name -> PyTorch inner name.
NAME_TABLE: dict[str, str] = {
    "global projection": "global_projection",
    "local projection": "local_projection",
}
NOT_TRANSPOSED = frozenset(NAME_TABLE.values())

# PyTorch parameters with no legacy variable of their own: tied to another parameter.
TIED: dict[str, str] = {
    "decoder.decoder_head.head.decoder.weight": "decoder.decoder.embeddings.word_embeddings.weight",
    "decoder.decoder_head.head.decoder.bias": "decoder.decoder_head.head.bias",
}
# PyTorch names that are the same parameter as a canonical one (shared encoder base).
SHARED: dict[str, str] = {"answer_encoder.encoder.": "question_encoder.encoder."}


class BridgeError(ValueError):
    """A weight could not be mapped or copied; the message names it."""


@dataclass
class WeightEntry:
    tf_name: str
    pt_name: str
    transposed: bool
    tf_shape: tuple[int, ...]
    pt_shape: tuple[int, ...]


@dataclass
class WeightMap:
    """Result of matching the two models' weights.

    Attributes:
        entries: one per mapped pair.
        tf_only: legacy variables with no PyTorch counterpart.
        pt_only: PyTorch parameters with no legacy counterpart (ties excluded).
        mismatched: "name: shapes" for pairs whose shapes disagree.
        tied: PyTorch parameter -> the parameter it is tied to.
        shared: groups of names that are one parameter.
    """

    entries: list[WeightEntry] = field(default_factory=list)
    tf_only: list[str] = field(default_factory=list)
    pt_only: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)
    shared: list[list[str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.tf_only or self.pt_only or self.mismatched)

    def pt_to_tf(self) -> dict[str, str]:
        """The PT->TF name map: the inverse of the TF->PT one."""
        return {entry.pt_name: entry.tf_name for entry in self.entries}

    def tf_to_pt(self) -> dict[str, str]:
        return {entry.tf_name: entry.pt_name for entry in self.entries}

    def as_pt(self, tf_arrays: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
        """Arrays keyed by legacy variable name (gradients, say) re-keyed by canonical PyTorch name,
        kernels in torch layout (a transposed view); None (or absent) stays None."""
        result = {}
        for entry in self.entries:
            value = tf_arrays.get(entry.tf_name)
            result[entry.pt_name] = None if value is None else pt_layout(entry, value)
        return result

    def summary(self) -> dict[str, Any]:
        return {"mapped": len(self.entries), "tf_only": self.tf_only, "pt_only": self.pt_only,
                "mismatched": self.mismatched, "tied": self.tied, "shared": self.shared}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pt_layout(entry: WeightEntry, value: np.ndarray) -> np.ndarray:
    """A legacy array of `entry` in the port's layout: kernels transposed (a view), the rest as is."""
    return value.T if entry.transposed else value


def _attribute(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _scope_prefix(names: list[str]) -> str:
    """Longest common '/'-terminated prefix: the component's own name scope."""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[: prefix.rfind("/") + 1]


def convert_name(tf_inner: str, shape: tuple[int, ...]) -> tuple[str, bool]:
    """Legacy name inside a component -> (PyTorch name inside it, transposed?)."""
    base = re.sub(r":\d+$", "", tf_inner)
    if base in NAME_TABLE:
        return NAME_TABLE[base], False
    # The converter drops the first scope (the model's name): give it a placeholder.
    # transformers' own TF -> PT name rule; its TF utilities exist only on the 4.57 line, which the
    # legacy side needs anyway (the port and `check` never reach this function).
    from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

    pt_inner, transpose = convert_tf_weight_name_to_pt_weight_name(f"_/{tf_inner}", "", tf_weight_shape=shape)
    if pt_inner.startswith("roberta."):  # TFRobertaModel wraps its layers in `roberta`
        pt_inner = pt_inner[len("roberta."):]
    return pt_inner, transpose is not TransposeType.NO


def canonical_pt_name(name: str) -> str:
    for alias, canonical in SHARED.items():
        if name.startswith(alias):
            return canonical + name[len(alias):]
    return name


def build_weight_map(tf_trainer: Any, pt_trainer: torch.nn.Module) -> WeightMap:
    """Match every variable of the legacy trainer with a parameter of the PyTorch trainer."""
    pt_params = dict(pt_trainer.named_parameters())  # shared and tied parameters listed once
    all_names = {name for name, _ in pt_trainer.named_parameters(remove_duplicate=False)}
    weight_map = WeightMap(tied={k: v for k, v in TIED.items() if k in all_names}, shared=_shared_groups(pt_trainer))
    seen_tf, seen_pt = set(), set()
    for tf_path, pt_path in COMPONENTS:
        # A component's weights may include another's (the LM head lists the tied embeddings): skip those.
        variables = [v for v in _attribute(tf_trainer, tf_path).weights if v.name not in seen_tf]
        if not variables:
            raise BridgeError(f"legacy component {tf_path} has no variables: was the model built?")
        prefix = _scope_prefix([v.name for v in variables]) if len(variables) > 1 else variables[0].name.rsplit("/", 1)[0] + "/"
        for variable in variables:
            seen_tf.add(variable.name)
            inner, transposed = convert_name(variable.name[len(prefix):], tuple(variable.shape))
            pt_name = f"{pt_path}.{inner}"
            if pt_name not in pt_params:
                weight_map.tf_only.append(variable.name)
                continue
            tf_shape, pt_shape = tuple(variable.shape), tuple(pt_params[pt_name].shape)
            expected = tf_shape[::-1] if transposed else tf_shape
            if expected != pt_shape:
                weight_map.mismatched.append(f"{variable.name} {tf_shape} -> {pt_name} {pt_shape}")
                continue
            seen_pt.add(pt_name)
            weight_map.entries.append(WeightEntry(variable.name, pt_name, transposed, tf_shape, pt_shape))
    unassigned = sorted(v.name for v in tf_trainer.weights if v.name not in seen_tf)
    weight_map.tf_only += unassigned
    weight_map.pt_only = sorted(name for name in pt_params if name not in seen_pt)
    return weight_map


def _shared_groups(pt_trainer: torch.nn.Module) -> list[list[str]]:
    by_storage: dict[int, list[str]] = {}
    for name, parameter in pt_trainer.named_parameters(remove_duplicate=False):
        by_storage.setdefault(id(parameter), []).append(name)
    return [names for names in by_storage.values() if len(names) > 1]


def _require_complete(weight_map: WeightMap) -> None:
    if not weight_map.complete:
        raise BridgeError(f"weights do not map one to one: legacy-only {weight_map.tf_only}, "
                          f"PyTorch-only {weight_map.pt_only}, shape mismatches {weight_map.mismatched}")


def _tf_variables(tf_trainer: Any) -> dict[str, Any]:
    return {variable.name: variable for variable in tf_trainer.weights}


def copy_tf_to_pt(tf_trainer: Any, pt_trainer: torch.nn.Module, weight_map: WeightMap | None = None) -> WeightMap:
    """Load the legacy trainer's weights into the PyTorch trainer (every weight, or an error)."""
    weight_map = weight_map or build_weight_map(tf_trainer, pt_trainer)
    _require_complete(weight_map)
    params = dict(pt_trainer.named_parameters())
    with torch.no_grad():
        for name, value in tf_values_as_pt(tf_trainer, weight_map):
            params[name].copy_(torch.from_numpy(value))
    return weight_map


def tf_values_as_pt(tf_trainer: Any, weight_map: WeightMap) -> Iterator[tuple[str, np.ndarray]]:
    """Each mapped legacy variable's value in the port's layout (kernels transposed), by PyTorch name."""
    variables = _tf_variables(tf_trainer)
    for entry in weight_map.entries:
        value = variables[entry.tf_name].numpy()
        yield entry.pt_name, np.ascontiguousarray(pt_layout(entry, value))


def copy_pt_to_tf(pt_trainer: torch.nn.Module, tf_trainer: Any, weight_map: WeightMap | None = None) -> WeightMap:
    """Load the PyTorch trainer's weights into the legacy trainer (every weight, or an error)."""
    weight_map = weight_map or build_weight_map(tf_trainer, pt_trainer)
    _require_complete(weight_map)
    variables = _tf_variables(tf_trainer)
    params = dict(pt_trainer.named_parameters())
    for entry in weight_map.entries:
        value = params[entry.pt_name].detach().cpu().numpy()
        variables[entry.tf_name].assign(np.ascontiguousarray(value.T if entry.transposed else value))
    return weight_map
