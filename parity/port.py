"""The port runner's set-up: the port built holding the weights a legacy run recorded, in both presets.

`check` (`parity.check`) runs the port this builds against a `LegacyRun`.
"""

from __future__ import annotations

import platform
from typing import Mapping

import numpy as np
import torch

from parity.bundle import BundleError
from parity.compare import TINY_TOLERANCE
from parity.results import LegacyRun
from parity.stages import Capture
from parity.capture import capture_torch
from qarac import QaracConfig, QaracTrainerModel
from qarac.base import built_with_weights

# Measured on roberta-base shapes with random weights (bench/parity_speed.py, worst 3.4e-5):
# twelve layers of float32 from two kernel libraries drift further than two.
ROBERTA_BASE_TOLERANCE = 1e-4


def versions() -> dict[str, str]:
    """The port side's libraries (the legacy side's are recorded with its run, as `legacy_*`)."""
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__}


def default_preset(architecture: QaracConfig, state: Mapping[str, torch.Tensor], share: bool = False) -> QaracTrainerModel:
    """The port's default preset holding the legacy preset's weights `state` (the pooler's left out).

    Args:
        share: hold `state`'s tensors themselves (`qarac.base.built_with_weights`), not copies.
    """
    model, _ = built_with_weights(lambda: QaracTrainerModel(architecture.fixed()),
                                  {k: v for k, v in state.items() if ".pooler." not in k}, share=share)
    return model.eval()


def build_port(run: LegacyRun, device: str | torch.device = "cpu",
               port: torch.nn.Module | None = None) -> tuple[QaracTrainerModel, QaracTrainerModel]:
    """The port's legacy preset and default preset holding the weights the legacy ran with.

    Args:
        port: a legacy-preset model to load the weights into (strictly) instead of building one.

    Raises:
        BundleError: the recorded weights do not fit the recorded architecture.
        RuntimeError: the recorded weights do not fit `port`.
    """
    architecture = QaracConfig(base=run.meta["model_config"])
    # One writable copy of the recorded weights, held by both presets (no other copy is made).
    state = {name: torch.from_numpy(np.array(value)) for name, value in run.weights.items()}
    if port is not None:
        port.load_state_dict(state, strict=True)
        return port.to(device).eval(), default_preset(architecture, state, share=True).to(device).eval()
    try:
        pt_legacy, _ = built_with_weights(lambda: QaracTrainerModel(architecture.legacy()), state, share=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:400]
        raise BundleError(f"the recorded weights do not fit the recorded architecture: {detail}") from None
    pt_default = default_preset(architecture, state, share=True)
    return pt_legacy.to(device).eval(), pt_default.to(device).eval()


def fixed_tolerance(config: QaracConfig) -> float:
    """The absolute tolerance for comparisons without a noise floor (and `--tolerance`'s old default)."""
    tiny = config.hidden_size <= 64 and int(config.base.get("num_hidden_layers", 12)) <= 2
    return TINY_TOLERANCE if tiny else ROBERTA_BASE_TOLERANCE


def determinism_checks(pt_model: QaracTrainerModel, inputs, pt_first: Capture,
                       recorded: Mapping[str, bool],
                       arguments: dict[str, tuple[tuple, dict]] | None = None) -> dict[str, bool]:
    """TF32 off and dropout off in the port, read back; a repeated forward is identical to the first;
    with the legacy's own flags as recorded (`tf_tf32_off`, `tf_repeat_identical`).

    Args:
        arguments: filled with the repeated forward's stage arguments (`capture_torch`).
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pt_model.eval()
    pt_again = capture_torch(pt_model, inputs, arguments=arguments).arrays()
    return {
        "torch_tf32_off": not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32,
        "tf_tf32_off": bool(recorded["tf_tf32_off"]),
        "torch_dropout_off": not any(module.training for module in pt_model.modules()),
        "torch_repeat_identical": all(np.array_equal(pt_again[k], v) for k, v in pt_first.arrays().items()),
        "tf_repeat_identical": bool(recorded["tf_repeat_identical"]),
    }


def primitives_agree(probe: tuple[np.ndarray, np.ndarray]) -> bool:
    """The port's l2_normalize matches the legacy's on the probe vectors (within 4 float32 ulps of 1)."""
    from qarac.heads import l2_normalize

    vectors, legacy = probe
    port = l2_normalize(torch.from_numpy(vectors)).numpy()
    return bool(np.abs(port - legacy).max() <= 4 * np.finfo(np.float32).eps)
