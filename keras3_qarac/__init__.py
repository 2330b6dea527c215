"""QARAC for multi-backend Keras 3, written as the original was designed, on keras-hub's RoBERTa.

The third column of the gradient census: the legacy design (encoder and decoder *models*
inside the trainer model, the pooling head and decoder head as layers, the legacy's quirks)
in Keras 3, run on the TensorFlow, PyTorch or JAX backend. Keras fixes its backend when it is
first imported, so each backend runs in its own process (`python -m keras3_qarac.runner`,
with `KERAS_BACKEND` set); `parity.keras3` starts one per backend and reads their results.

Importing this package imports nothing heavy; its submodules import Keras:

    from keras3_qarac.build import build_trainer
    from keras3_qarac.weights import set_weights, gradients_by_pt_name
"""

import importlib

_LAZY = {
    "GlobalAttentionPoolingHead": "keras3_qarac.layers",
    "QaracDecoderHead": "keras3_qarac.layers",
    "RobertaLMHead": "keras3_qarac.layers",
    "RobertaBase": "keras3_qarac.base",
    "QaracEncoderModel": "keras3_qarac.models",
    "QaracDecoderModel": "keras3_qarac.models",
    "QaracTrainerModel": "keras3_qarac.models",
    "build_trainer": "keras3_qarac.build",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras3_qarac' has no attribute {name!r}")
