"""Import TensorFlow, tf-keras and transformers' TF RoBERTa the way the legacy needs.

`transformers`' TF classes are written against the Keras 2 API, which TensorFlow
2.16+ only provides through the `tf-keras` package and `TF_USE_LEGACY_KERAS=1`.
Both environment variables must be set before TensorFlow is first imported, so
every legacy module imports TensorFlow through this one.

TF's C++ start-up chatter is silenced (`TF_CPP_MIN_LOG_LEVEL`); its Python
logger is left alone: the "Gradients do not exist" warning this package
reproduces is logged there.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ["TF_USE_LEGACY_KERAS"] != "1":  # pragma: no cover - environment misuse
    raise RuntimeError(
        "legacy_keras needs the Keras 2 API: TF_USE_LEGACY_KERAS must be '1' "
        f"(it is {os.environ['TF_USE_LEGACY_KERAS']!r}); unset it or set it to 1 before importing TensorFlow"
    )

try:
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "legacy_keras needs TensorFlow and tf-keras: install the `legacy` extra "
        "(pip install -e '.[legacy]')"
    ) from error

import transformers  # noqa: E402
from transformers import RobertaConfig, TFRobertaModel  # noqa: E402
from transformers.models.roberta.modeling_tf_roberta import (  # noqa: E402
    TFRobertaLayer,
    TFRobertaLMHead,
)

__all__ = [
    "tf",
    "keras",
    "transformers",
    "RobertaConfig",
    "TFRobertaModel",
    "TFRobertaLayer",
    "TFRobertaLMHead",
]
