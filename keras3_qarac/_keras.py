"""Import Keras 3 and keras-hub the way this package needs, on the backend the environment names.

Keras reads `KERAS_BACKEND` once, at its first import: every module of this package imports
Keras through this one, which refuses Keras 2 (`tf_keras`) and says which backend it got.
Nothing here downloads: keras-hub is only used for its layers, never for `from_preset`.
"""

import os

# Hub look-ups are never wanted: the model comes from a local directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KAGGLE_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:
    import keras  # noqa: E402
    import keras_hub  # noqa: E402
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError("keras3_qarac needs Keras 3 and keras-hub: install the `keras3` extra "
                      "(pip install -e '.[keras3]')") from error

if not keras.__version__.startswith("3."):  # pragma: no cover - environment misuse
    raise ImportError(f"keras3_qarac needs Keras 3, got keras {keras.__version__}")

from keras import ops  # noqa: E402

BACKENDS = ("tensorflow", "torch", "jax")


def backend() -> str:
    """The backend Keras was imported with (`KERAS_BACKEND`)."""
    return keras.backend.backend()


__all__ = ["keras", "keras_hub", "ops", "backend", "BACKENDS"]
