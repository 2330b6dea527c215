"""QARAC in PyTorch: two encoders, a decoder and four training objectives.

The names below load their module on first use (PEP 562), so that importing one light module
of the package (`qarac.objectives`, `qarac.batch`) loads neither the model nor `transformers`:
`parity.comparator` judges results through such modules alone. Every module that imports
`transformers` imports `qarac._hf` first, so the port never imports TensorFlow.
"""

import importlib

_LAZY = {
    "LEGACY_VALUES": "qarac.config",
    "QaracConfig": "qarac.config",
    "QaracDecoderModel": "qarac.decoder",
    "QaracEncoderModel": "qarac.encoder",
    "GlobalAttentionPoolingHead": "qarac.heads",
    "QaracDecoderHead": "qarac.heads",
    "LossBreakdown": "qarac.losses",
    "QaracLoss": "qarac.losses",
    "INPUT_NAMES": "qarac.trainer",
    "QaracTrainerModel": "qarac.trainer",
    "QaracTrainerOutput": "qarac.trainer",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qarac' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
