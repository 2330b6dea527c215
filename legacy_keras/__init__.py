"""The legacy Keras/TensorFlow QARAC, rebuilt faithfully (quirks and lost gradients included).

Importing this package does not import TensorFlow; its submodules do:

    from legacy_keras.build import build_trainer, build_encoder, build_decoder
    from legacy_keras.gradients import missing_gradients, gradient_report
    from legacy_keras.pipeline import CombinedCorpus   # the original's input pipeline
    python -m legacy_keras.reproduce

See legacy_keras/README.md for why six gradients go missing.
"""

import importlib

_LAZY = {
    "GlobalAttentionPoolingHead": "legacy_keras.layers",
    "QaracDecoderHead": "legacy_keras.layers",
    "QaracEncoderModel": "legacy_keras.models",
    "QaracDecoderModel": "legacy_keras.models",
    "QaracTrainerModel": "legacy_keras.models",
    "build_trainer": "legacy_keras.build",
    "build_encoder": "legacy_keras.build",
    "build_decoder": "legacy_keras.build",
    "missing_gradients": "legacy_keras.gradients",
    "gradient_report": "legacy_keras.gradients",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'legacy_keras' has no attribute {name!r}")
