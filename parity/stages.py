"""The stages the harness compares, and a captured forward pass, as plain data.

Localising a difference means comparing what each stage of the model
*actually computed* in the trainer's own forward pass, not pieces re-run with
arguments of the harness's choosing: a bug in the glue between components (a
mask handed to the wrong head, the wrong position dropped) changes only what
the real forward feeds a stage, and is invisible to a re-run.

Each framework's runner records its stages (the port: `parity.capture`, forward
hooks; the legacy: `parity.legacy.capture`, each layer's `call` wrapped) into a
`Capture`: named numpy arrays (each stage's primary input and its output) in
execution order, plus the trainer's outputs. `STAGES` is the one table both use:
where each stage sits in the trainer, and which trainer input each of its calls
belongs to.

A stage is named `"<site> (<input>)"`: the site is one of `parity.groups`'
group names (so a stage's error lines up with the parameters that produce it)
and the input is the trainer input the call belongs to, e.g.
`"encoder base: layer 1 (proposition0)"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

# The order in which the legacy `QaracTrainerModel.call` (and the port's per-call
# path, which mirrors it) runs its encoders and decoders.
ENCODER_CALLS = ("all_text", "question", "answer", "proposition0", "proposition1", "statement0", "statement1")
ANSWER_HEAD_CALLS = tuple(name for name in ENCODER_CALLS if name != "question")
DECODER_CALLS = ("offset_text", "conclusion_offset")

# (site, attribute path in the trainer, the trainer inputs of its successive calls), in execution order.
# `{roberta}` is where the two frameworks' RoBERTa bodies differ: the port's encoder *is* the
# `RobertaModel`, the legacy's TF wrapper holds it as `.roberta`. `{i}` is the layer number.
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("encoder base: embeddings", "question_encoder.encoder{roberta}.embeddings", ENCODER_CALLS),
    ("encoder base: layer {i}", "question_encoder.encoder{roberta}.encoder.layer.{i}", ENCODER_CALLS),
    ("question encoder head: output", "question_encoder.head", ("question",)),
    ("answer encoder head: output", "answer_encoder.head", ANSWER_HEAD_CALLS),
    ("decoder base: embeddings", "decoder.decoder{roberta}.embeddings", DECODER_CALLS),
    ("decoder base: layer {i}", "decoder.decoder{roberta}.encoder.layer.{i}", DECODER_CALLS),
    ("decoder head: layer_0", "decoder.decoder_head.layer_0", DECODER_CALLS),
    ("decoder head: layer_1", "decoder.decoder_head.layer_1", DECODER_CALLS),
    ("decoder head: LM head", "decoder.decoder_head.head", DECODER_CALLS),
)
# `STAGES`' `{roberta}` in each framework.
TORCH_ROBERTA = ""
KERAS_ROBERTA = ".roberta"


@dataclass
class Capture:
    """One forward pass, as data.

    Attributes:
        outputs: the trainer's four outputs by name (consistency as (B,)).
        stage_inputs: stage name -> the primary input the stage received (None for embeddings: token ids).
        stage_outputs: stage name -> what the stage returned, e.g. (B, T, H) or (B, T, V).
        order: stage names in execution order.
    """

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    stage_inputs: dict[str, np.ndarray | None] = field(default_factory=dict)
    stage_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    tensors_in: dict[str, Any] = field(default_factory=dict, repr=False)  # framework tensors, when kept
    tensors_out: dict[str, Any] = field(default_factory=dict, repr=False)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array under one flat name (`output/...`, `stage_in/...`, `stage_out/...`), e.g. for saving."""
        flat = {f"output/{k}": v for k, v in self.outputs.items()}
        flat.update({f"stage_in/{k}": v for k, v in self.stage_inputs.items() if v is not None})
        flat.update({f"stage_out/{k}": v for k, v in self.stage_outputs.items()})
        return flat


def stage_token_input(stage: str) -> str:
    """The trainer input whose mask covers a stage's token axis: `"x (answer)"` -> `"answer"`."""
    return stage.rsplit("(", 1)[1].rstrip(")")


def stage_site(stage: str) -> str:
    """`"encoder base: layer 1 (answer)"` -> `"encoder base: layer 1"`."""
    return stage.rsplit(" (", 1)[0]


def sites(num_layers: int) -> dict[str, tuple[str, ...]]:
    """Site -> the trainer inputs of its successive calls, in execution order of one trainer forward."""
    result: dict[str, tuple[str, ...]] = {}
    for site, _, calls in STAGES:
        layers = range(num_layers) if "{i}" in site else (None,)
        result.update({site.format(i=i): calls for i in layers})
    return result


def _attribute(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def num_layers(model: Any, roberta: str) -> int:
    """The encoder base's layer count of a trainer (`roberta`: `TORCH_ROBERTA` or `KERAS_ROBERTA`)."""
    path = next(path for site, path, _ in STAGES if "{i}" in site)
    return len(_attribute(model, path.format(roberta=roberta, i=0).rsplit(".", 1)[0]))


def stage_modules(model: Any, roberta: str) -> dict[str, Any]:
    """Site -> the module (PyTorch) or layer (Keras) of a trainer that computes it, in `STAGES` order."""
    count = num_layers(model, roberta)
    result = {}
    for site, path, _ in STAGES:
        for i in range(count) if "{i}" in site else (None,):
            result[site.format(i=i)] = _attribute(model, path.format(roberta=roberta, i=i))
    return result


class StageRecorder:
    """Collects (site, input, output) per call and names each call after its trainer input."""

    def __init__(self, num_layers: int, to_numpy: Callable[[Any], np.ndarray]):
        self.sites, self.to_numpy = sites(num_layers), to_numpy
        self.calls: dict[str, int] = {site: 0 for site in self.sites}
        self.capture = Capture()

    def name(self, site: str) -> str:
        """Name of the site's next call; raises if the forward made more calls than the legacy's trainer does."""
        labels = self.sites[site]
        index = self.calls[site]
        if index >= len(labels):
            raise RuntimeError(f"stage {site!r} was called {index + 1} times; the trainer's forward calls it "
                               f"{len(labels)} times ({', '.join(labels)})")
        self.calls[site] += 1
        return f"{site} ({labels[index]})"

    def record(self, name: str, stage_input: Any, stage_output: Any) -> None:
        self.capture.stage_inputs[name] = None if stage_input is None else self.to_numpy(stage_input)
        self.capture.stage_outputs[name] = self.to_numpy(stage_output)
        self.capture.order.append(name)


def first_tensor(value: Any) -> Any:
    """A stage's primary output: the first of a tuple (HF layers return tuples), else the value."""
    return value[0] if isinstance(value, (tuple, list)) else value

