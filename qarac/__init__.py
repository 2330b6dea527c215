"""QARAC in PyTorch: two encoders, a decoder and four training objectives.

Importing this package never imports TensorFlow (see `qarac._hf`).
"""

from qarac import _hf  # noqa: F401  (must run before anything imports transformers)
from qarac.config import LEGACY_VALUES, QaracConfig
from qarac.decoder import QaracDecoderModel
from qarac.encoder import QaracEncoderModel
from qarac.heads import GlobalAttentionPoolingHead, QaracDecoderHead
from qarac.losses import LossBreakdown, QaracLoss
from qarac.trainer import INPUT_NAMES, QaracTrainerModel, QaracTrainerOutput

__all__ = [
    "LEGACY_VALUES",
    "INPUT_NAMES",
    "GlobalAttentionPoolingHead",
    "LossBreakdown",
    "QaracConfig",
    "QaracDecoderHead",
    "QaracDecoderModel",
    "QaracEncoderModel",
    "QaracLoss",
    "QaracTrainerModel",
    "QaracTrainerOutput",
]
