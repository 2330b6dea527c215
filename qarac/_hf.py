"""Import the PyTorch side of `transformers` without dragging TensorFlow in.

`transformers` 4.57 imports TensorFlow from `image_transforms` (reached through
`modeling_layers -> processing_utils -> video_utils`) whenever TensorFlow is
installed, which it is beside the `legacy` extra. The port must never import it,
so that one module is imported once with TensorFlow hidden from the availability
check, and the check is restored straight after: `legacy_keras` can still load
the TF RoBERTa classes in the same process.
"""

import sys


def _import_image_transforms_without_tensorflow() -> None:
    if "transformers.image_transforms" in sys.modules:
        return
    import transformers.utils.import_utils as import_utils

    if not hasattr(import_utils, "_tf_available"):
        return  # transformers 5 has no TensorFlow support to keep out
    tf_available = import_utils._tf_available
    import_utils._tf_available = False
    try:
        import transformers.image_transforms  # noqa: F401
    finally:
        import_utils._tf_available = tf_available


_import_image_transforms_without_tensorflow()
