"""The model-agnostic core: any Keras original and its PyTorch port, described by one `Pair`.

Pipeline: spec (`spec`, `weights`) -> runners that produce results (`keras_side` imports
TensorFlow, `torch_side` runs the port) -> results as data (`results`, bundled by `codec`) ->
one comparator (`judge`, by the rule in `parity.tolerance`) -> formatting (`report`) -> the
command line (`cli`). `recording` runs the original, `pipeline` checks a port against a run.
Nothing here imports a model package (tests/test_layout.py). A user's spec imports its parts
from `parity.pairs`.
"""
