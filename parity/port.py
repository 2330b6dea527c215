"""The port runner's set-up: the port built holding the weights a legacy run recorded, in both presets.

`parity.port_runner.run_port` runs the port this builds on a `LegacyRun`'s inputs.
"""

from __future__ import annotations

import platform
from typing import Mapping

import numpy as np
import torch

from parity.bundle import BundleError
from parity.results import LegacyRun
from qarac import QaracConfig, QaracTrainerModel
from qarac.base import built_with_weights


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
