"""Stages captured from the real forward pass of each framework, as plain data.

Localising a difference means comparing what each stage of the model
*actually computed* in the trainer's own forward pass, not pieces re-run with
arguments of the harness's choosing: a bug in the glue between components (a
mask handed to the wrong head, the wrong position dropped) changes only what
the real forward feeds a stage, and is invisible to a re-run.

PyTorch side: forward hooks on the stage modules. Keras side: each stage
layer's own `call` wrapped for the duration of one trainer call. Either way the
result is a `Capture`: named numpy arrays (each stage's primary input and its
output) in execution order, plus the trainer's outputs. The legacy side's
capture is data that can be saved and compared later without TensorFlow.

A stage is named `"<site> (<input>)"`: the site is one of `parity.groups`'
group names (so a stage's error lines up with the parameters that produce it)
and the input is the trainer input the call belongs to, e.g.
`"encoder base: layer 1 (proposition0)"`.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

# The order in which the legacy `QaracTrainerModel.call` (and the port's per-call
# path, which mirrors it) runs its encoders and decoders.
ENCODER_CALLS = ("all_text", "question", "answer", "proposition0", "proposition1", "statement0", "statement1")
ANSWER_HEAD_CALLS = tuple(name for name in ENCODER_CALLS if name != "question")
DECODER_CALLS = ("offset_text", "conclusion_offset")


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


class _Recorder:
    """Collects (site, input, output) per call and names each call after its trainer input."""

    def __init__(self, sites: Mapping[str, tuple[str, ...]], to_numpy: Callable[[Any], np.ndarray]):
        self.sites, self.to_numpy = sites, to_numpy
        self.calls: dict[str, int] = {site: 0 for site in sites}
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


def _sites(num_layers: int) -> dict[str, tuple[str, ...]]:
    """Site -> the trainer inputs of its successive calls, in execution order of one trainer forward."""
    sites: dict[str, tuple[str, ...]] = {"encoder base: embeddings": ENCODER_CALLS}
    sites.update({f"encoder base: layer {i}": ENCODER_CALLS for i in range(num_layers)})
    sites["question encoder head: output"] = ("question",)
    sites["answer encoder head: output"] = ANSWER_HEAD_CALLS
    sites["decoder base: embeddings"] = DECODER_CALLS
    sites.update({f"decoder base: layer {i}": DECODER_CALLS for i in range(num_layers)})
    sites.update({f"decoder head: {name}": DECODER_CALLS for name in ("layer_0", "layer_1", "LM head")})
    return sites


# --- PyTorch --------------------------------------------------------------------------------

def torch_stage_modules(model: Any) -> dict[str, torch.nn.Module]:
    """Site -> module of a PyTorch `QaracTrainerModel`."""
    encoder, decoder = model.question_encoder.encoder, model.decoder.decoder
    head = model.decoder.decoder_head
    modules = {"encoder base: embeddings": encoder.embeddings}
    modules.update({f"encoder base: layer {i}": layer for i, layer in enumerate(encoder.encoder.layer)})
    modules["question encoder head: output"] = model.question_encoder.head
    modules["answer encoder head: output"] = model.answer_encoder.head
    modules["decoder base: embeddings"] = decoder.embeddings
    modules.update({f"decoder base: layer {i}": layer for i, layer in enumerate(decoder.encoder.layer)})
    modules.update({"decoder head: layer_0": head.layer_0, "decoder head: layer_1": head.layer_1,
                    "decoder head: LM head": head.head})
    return modules


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def _torch_numpy(value: Any) -> np.ndarray:
    return _first_tensor(value).detach().cpu().numpy().copy()


@contextlib.contextmanager
def torch_hooks(model: Any, substitute: Mapping[str, np.ndarray | None] | None = None) -> Iterator[Capture]:
    """Record every stage of `model`'s forward passes run inside the block.

    Args:
        model: a PyTorch `QaracTrainerModel` on the per-call path (the legacy preset).
        substitute: stage name -> an input to feed that stage *instead of* what the
            forward hands it (same shape); used to measure the error each stage
            introduces on its own, given the legacy's input.

    Yields: the `Capture` being filled (outputs are left to the caller).
    """
    modules = torch_stage_modules(model)
    recorder = _Recorder(_sites(len(model.question_encoder.encoder.encoder.layer)), _torch_numpy)
    pending: dict[str, list[tuple[str, Any]]] = {site: [] for site in modules}
    handles = []

    def before(site: str, module, args, kwargs):
        name = recorder.name(site)
        replacement = (substitute or {}).get(name)
        if replacement is not None and args:
            args = (torch.as_tensor(replacement, dtype=args[0].dtype, device=args[0].device), *args[1:])
        stage_input = None if site.endswith("embeddings") else args[0]
        pending[site].append((name, stage_input))
        return args, kwargs

    def after(site: str, module, args, kwargs, output):
        name, stage_input = pending[site].pop()
        recorder.record(name, stage_input, output)

    for site, module in modules.items():
        handles.append(module.register_forward_pre_hook(functools.partial(before, site), with_kwargs=True))
        handles.append(module.register_forward_hook(functools.partial(after, site), with_kwargs=True))
    try:
        yield recorder.capture
    finally:
        for handle in handles:
            handle.remove()


def capture_torch(model: Any, inputs: Mapping[str, Any],
                  substitute: Mapping[str, np.ndarray | None] | None = None) -> Capture:
    """One trainer forward of the PyTorch model (no grad), every stage recorded."""
    if model.uses_batched_calls:
        raise ValueError("stage capture follows the legacy's call order: use a model on the per-call path "
                         "(the legacy preset, or batched_calls=False)")
    with torch.no_grad(), torch_hooks(model, substitute) as capture:
        outputs = model(inputs).as_dict()
    capture.outputs = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
    return capture


# --- Keras ----------------------------------------------------------------------------------

def keras_stage_layers(model: Any) -> dict[str, Any]:
    """Site -> layer of the legacy Keras `QaracTrainerModel`."""
    encoder = model.question_encoder.encoder.roberta
    decoder = model.decoder.decoder.roberta
    head = model.decoder.decoder_head
    layers = {"encoder base: embeddings": encoder.embeddings}
    layers.update({f"encoder base: layer {i}": layer for i, layer in enumerate(encoder.encoder.layer)})
    layers["question encoder head: output"] = model.question_encoder.head
    layers["answer encoder head: output"] = model.answer_encoder.head
    layers["decoder base: embeddings"] = decoder.embeddings
    layers.update({f"decoder base: layer {i}": layer for i, layer in enumerate(decoder.encoder.layer)})
    layers.update({"decoder head: layer_0": head.layer_0, "decoder head: layer_1": head.layer_1,
                   "decoder head: LM head": head.head})
    return layers


def _keras_numpy(value: Any) -> np.ndarray:
    return np.asarray(_first_tensor(value)).copy()


@contextlib.contextmanager
def keras_hooks(model: Any, keep_tensors: bool = False) -> Iterator[Capture]:
    """Record every stage of the legacy model's eager calls inside the block.

    Each stage layer's `call` is wrapped on the instance (Keras' `__call__`
    dispatches to it), and restored afterwards.

    Args:
        keep_tensors: also keep the TF tensors themselves (`capture.tensors_in`,
            `capture.tensors_out`), e.g. to differentiate with respect to them.
    """
    layers = keras_stage_layers(model)
    recorder = _Recorder(_sites(len(model.question_encoder.encoder.roberta.encoder.layer)), _keras_numpy)
    originals = {}

    def wrap(site: str, call):
        @functools.wraps(call)
        def recording_call(*args, **kwargs):
            name = recorder.name(site)
            if site.endswith("embeddings"):
                stage_input = None
            else:
                stage_input = args[0] if args else kwargs.get("hidden_states", kwargs.get("inputs"))
            output = call(*args, **kwargs)
            recorder.record(name, stage_input, output)
            if keep_tensors:
                recorder.capture.tensors_in[name] = stage_input
                recorder.capture.tensors_out[name] = _first_tensor(output)
            return output
        return recording_call

    for site, layer in layers.items():
        originals[site] = layer.__dict__.get("call")
        layer.call = wrap(site, layer.call)
    try:
        yield recorder.capture
    finally:
        for site, layer in layers.items():
            if originals[site] is None:
                del layer.call
            else:
                layer.call = originals[site]


def capture_keras(model: Any, inputs: Mapping[str, Any]) -> Capture:
    """One eager legacy trainer call (training=False), every stage recorded."""
    from parity.tf_side import numpy_tree, tf_inputs

    with keras_hooks(model) as capture:
        outputs = numpy_tree(model(tf_inputs(inputs), training=False))
    outputs["consistency"] = outputs["consistency"][:, 0]  # (B, 1) -> (B,) as the port
    capture.outputs = outputs
    return capture
