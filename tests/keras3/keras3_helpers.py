"""The port's legacy preset as the reference of the Keras 3 tests, shaped like a `LegacyRun`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from parity.capture import capture_torch
from parity.tolerance import TINY_TOLERANCE
from parity.port_gradients import torch_gradients
from parity.inputs import sample_batch
from qarac import QaracConfig, QaracTrainerModel
from qarac.checkpoint import read_roberta_config

SEED_MISSING = {
    "question_encoder.encoder.pooler.dense.weight", "question_encoder.encoder.pooler.dense.bias",
    "decoder.decoder.pooler.dense.weight", "decoder.decoder.pooler.dense.bias",
    "question_encoder.head.local_projection", "answer_encoder.head.local_projection",
}
POOLER = {name for name in SEED_MISSING if ".pooler." in name}
LOCAL_PROJECTIONS = SEED_MISSING - POOLER


def port_reference(model_dir) -> SimpleNamespace:
    """The port's legacy preset on the tiny model (base weights from the directory, heads from seed 0):
    the fields of a `LegacyRun` that `parity.keras3` reads, with the port in the legacy's place."""
    from safetensors.torch import load_file

    architecture = QaracConfig.from_roberta_config(read_roberta_config(model_dir))
    torch.manual_seed(0)
    model = QaracTrainerModel(architecture.legacy()).eval()
    base = load_file(str(model_dir / "model.safetensors"))
    model.question_encoder.encoder.load_state_dict(base, strict=True)
    model.decoder.decoder.load_state_dict(base, strict=True)
    batch = sample_batch(model_dir, model.config, 4, 0)
    parameters = [name for name, _ in model.named_parameters()]
    return SimpleNamespace(
        model=model,
        parameters=parameters,
        weights={name: p.detach().numpy().copy() for name, p in model.named_parameters()},
        inputs={"padded": batch.inputs},
        targets=batch.targets,
        captures={"padded": capture_torch(model, batch.inputs)},
        gradients={"tf/eager": torch_gradients(model, batch.inputs, batch.targets)},
        meta={"model": str(model_dir), "seed": 0, "model_config": dict(model.config.base)},
    )


def fixed_tolerance_report() -> SimpleNamespace:
    """The parts of a `ParityReport` `parity.keras3` reads: judged at the tiny model's fixed tolerance."""
    return SimpleNamespace(verdict={"mode": "fixed tolerance", "absolute_tolerance": TINY_TOLERANCE},
                           noise_floors={})


def with_array(run, key: str, change) -> object:
    """A copy of a `BackendRun` whose array `key` is replaced by `change(array)` (a planted bug)."""
    from parity.keras3 import BackendRun

    arrays = dict(run.arrays)
    arrays[key] = change(np.array(arrays[key]))
    return BackendRun(run.backend, run.results, arrays, run.wall_s)
