"""The port runner: the port run once on a legacy run's inputs, everything it computes kept as data.

`run_port(run)` builds the port holding the weights the legacy ran with (`parity.port`), runs it
on the run's batches and returns a `parity.results.PortRun`: its captured forwards, its own
noise variants and float64 twin, its gradients per mode, its determinism, the deviation ledger,
its training steps. The comparator (`parity.comparator`) then judges that against the
`LegacyRun` without running any model; `parity.check.check` is the two in a row.

The runner takes the whole `LegacyRun`, not only its weights and batches, because some of the
port's computations are driven by the legacy's data, and they are port computations all the
same, so they live here and the comparator stays pure:

- introduced errors: a forward whose every stage is fed the legacy's input to that stage;
- the backward per stage: each stage re-run on the legacy's input, backpropagating the legacy's
  upstream gradient;
- the noise floors: the reordering variants are repeated on the other batches only where they
  moved a value of the padded batch, on either side (`parity.noise.REORDER_VARIANTS`).

The floors themselves depend on both sides (the port's variants plus the legacy's); each runner
measures its own, and only the comparator adds them up (`parity.noise.floors`).

Every result is held until the comparison; the largest is the float64 twin's gradient of every
parameter (twice the float32 model's size), held from the float64 stage to the end of the run.

Planted bugs (`parity.mutations`) patch the port's code or the recorded weights for the duration
of a `check`, so the runner builds and runs the mutated port and the comparator judges it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from parity.capture import capture_torch, torch_stage_modules
from parity.port_gradients import torch_gradients, torch_gradients_and_reachability
from parity.ledger import measure_deviations
from parity.noise import compared_values, max_difference, reorder_moved, values_and_masks
from parity.port import build_port, versions
from parity.port_noise import capture_float64, float64_default, float64_twin, port_noise, release_twins
from parity.port_training import train_port
from parity.results import LegacyBackward, LegacyRun, PortRun
from parity.sharp import VERSION_KEY, sharpened_weights
from parity.stages import Capture, stage_site


class _Timer:
    def __init__(self, timings: dict[str, float], progress: Callable[[str], None]):
        self.timings, self.progress = timings, progress

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)


def run_port(run: LegacyRun, device: str | torch.device = "cpu", port: torch.nn.Module | None = None,
             progress: Callable[[str], None] = lambda stage: None) -> PortRun:
    """Run the port on `run`'s inputs, once, and keep every result (`PortRun`).

    Args:
        device: where the port runs ("cpu", "cuda"); TF32 is turned off and read back there.
        port: a model in the legacy preset with `QaracTrainerModel`'s parameter names to run instead
            of the one built from the run (`parity.testing`); the run's weights are loaded into it.

    Raises:
        BundleError: the recorded weights do not fit the recorded architecture.
        RuntimeError: the recorded weights do not fit `port`.
    """
    timings: dict[str, float] = {}
    timer = _Timer(timings, progress)
    with timer.stage("build"):
        pt_legacy, pt_default = build_port(run, device, port)
        inputs = {case: {name: tokens.to(device) for name, tokens in batch.items()} for case, batch in run.inputs.items()}
        targets = {name: value.to(device) for name, value in run.targets.items()}
    result = PortRun(versions(), bool(getattr(pt_legacy.config, "is_legacy", False)), timings_s=timings)
    result.precision_settings = precision_settings(device)  # as the forwards below run: TF32 is turned off later
    with timer.stage("forward"):
        _forward(result, run, pt_legacy, inputs)
    if run.float64 is not None:  # the twin's forwards of the compared batches were taken for the floors
        with timer.stage("float64"):
            result.float64_captures["all_padding_row"] = capture_float64(pt_legacy, inputs["all_padding_row"])
            with float64_default():
                result.float64_gradients = torch_gradients(float64_twin(pt_legacy), inputs["padded"], targets)
    release_twins(pt_legacy)
    stage_calls: dict[str, tuple[tuple, dict]] = {}  # the repeated forward's stage arguments, for the backward
    with timer.stage("determinism"):
        repeat: dict[str, float] = {}
        result.determinism = determinism(pt_legacy, inputs["padded"], result.captures["padded"], stage_calls, repeat)
        for name, moved in repeat.items():  # the repeated forward is one more variant of the port's own path
            result.noise["padded"].moved[name]["repeat"] = moved
    with timer.stage("gradients"):
        for mode, model in (("pt/legacy", pt_legacy), ("pt/default", pt_default)):
            progress(f"gradients: {mode} (total and per objective)")
            result.gradients[mode], result.reachability[mode] = torch_gradients_and_reachability(
                model, inputs["padded"], targets)
        result.default_parameters = [name for name, _ in pt_default.named_parameters()]
        progress("gradients: backward per stage")
        result.backward = stage_input_gradients(pt_legacy, run.backward, inputs["padded"], stage_calls)
    with timer.stage("deviations"):
        # The ledger switches each legacy option off a legacy-preset port; a port given in another
        # preset (`parity.testing`) has no ledger, and fails `port_in_legacy_preset`.
        result.deviations = ([d.to_dict() for d in measure_deviations(pt_legacy, inputs["padded"], targets)]
                             if result.legacy_preset else [])
    if run.training is not None:
        with timer.stage("training"):
            result.training = train_port(run)
    result.l2_normalized = l2_normalized(run.l2_probe[0])
    return result


def _forward(result: PortRun, run: LegacyRun, pt_model, inputs: Mapping[str, Any]) -> None:
    """Every compared case: the port's capture, its own noise variants, and (padded, sharp) the
    forward fed the legacy's stage inputs; then the all-padding row's capture."""
    seed = int(run.meta["seed"])

    def case(name: str, batch: str, reorder: bool = True, introduced: bool = True) -> None:
        pt = result.captures[name] = capture_torch(pt_model, inputs[batch])
        result.noise[name], result.float64_captures[name] = port_noise(pt_model, inputs[batch], pt, seed, reorder)
        if introduced:
            fed = capture_torch(pt_model.eval(), inputs[batch], substitute=run.captures[name].stage_inputs)
            result.introduced[name] = Capture(stage_outputs=fed.stage_outputs, order=fed.order)

    case("padded", "padded")
    # The reorderings are repeated on the other batches only where they moved something here, on either side.
    reorder = reorder_moved(result.noise["padded"].moved) or reorder_moved(run.legacy_floors["padded"])
    for name in ("unpadded", "max_length"):
        case(name, name, reorder, introduced=False)
    # the nonlinearities exercised, on the set of the version the legacy's run used (parity.sharp)
    with sharpened_weights(pt_model, run.meta[VERSION_KEY]):
        case("sharp", "padded", reorder)
    result.captures["all_padding_row"] = capture_torch(pt_model, inputs["all_padding_row"])


def precision_settings(device: str | torch.device = "cpu") -> dict[str, Any]:
    """torch's process-wide float32 settings, read back: the report records what the port ran with
    (`check --device cuda`). TF32 or a reduced matmul precision left on is not refused here: it makes the
    port's float32 path less precise than the legacy's, which precision parity judges (`parity.precision`)."""
    return {"device": str(device), "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def determinism(pt_model, inputs: Mapping[str, Any], first: Capture,
                arguments: dict[str, tuple[tuple, dict]] | None = None,
                moved: dict[str, float] | None = None) -> dict[str, bool]:
    """TF32 off and dropout off in the port, read back; a repeated forward identical to `first`.

    Args:
        arguments: filled with the repeated forward's stage arguments (`capture_torch`).
        moved: filled with compared value -> max |repeat - first| over real tokens (`parity.noise`).
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pt_model.eval()
    repeated = capture_torch(pt_model, inputs, arguments=arguments)
    if moved is not None:
        reference, masks = values_and_masks(first, inputs)
        for name, value in compared_values(repeated).items():
            moved[name] = max_difference(value, reference[name], masks[name])
    again = repeated.arrays()
    return {
        "torch_tf32_off": not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32,
        "torch_dropout_off": not any(module.training for module in pt_model.modules()),
        "torch_repeat_identical": all(np.array_equal(again[k], v) for k, v in first.arrays().items()),
    }


def stage_input_gradients(pt_model, legacy: LegacyBackward, inputs: Mapping[str, Any],
                          calls: Mapping[str, tuple[tuple, dict]] | None = None) -> dict[str, np.ndarray]:
    """Per stage: the input gradient the port's stage passes on, fed the legacy's input and upstream gradient.

    Args:
        calls: the stages' arguments in a forward of `pt_model` on `inputs` already run
            (`parity.capture.capture_torch`'s `arguments`); None runs one.

    Returns: stage -> d loss / d stage input, shaped as the stage's input (compared by `parity.backward`).
    """
    if calls is None:
        calls = {}
        capture_torch(pt_model, inputs, arguments=calls)
    modules = torch_stage_modules(pt_model)
    device = next(pt_model.parameters()).device
    result = {}
    for name in legacy.order:
        args, kwargs = calls[name]
        stage_input = torch.tensor(legacy.stage_inputs[name], dtype=torch.float32, device=device, requires_grad=True)
        output = modules[stage_site(name)](stage_input, *args[1:], **kwargs)
        output = output[0] if isinstance(output, (tuple, list)) else output
        upstream = torch.tensor(np.array(legacy.upstream[name]), dtype=output.dtype, device=device)
        # Only the input's gradient: the parameters' (the LM head's alone is V x H) are not computed.
        (input_gradient,) = torch.autograd.grad(output, stage_input, upstream)
        result[name] = input_gradient.cpu().numpy()
    return result


def l2_normalized(vectors: np.ndarray) -> np.ndarray:
    """The port's `l2_normalize` of the legacy's probe vectors (`LegacyRun.l2_probe`)."""
    from qarac.heads import l2_normalize

    return l2_normalize(torch.from_numpy(vectors)).numpy()
