"""The legacy's eager `tf.vectorized_map` calls, each traced once per function and input signature.

Called eagerly, `tf.vectorized_map` wraps its vectorised loop in a new `tf.function`
at every call (`tensorflow/python/ops/parallel_for/control_flow_ops.py: pfor`), so every
eager legacy forward traces, converts (pfor) and instantiates the pooling heads' three maps
again (on the tiny model, half of the eager recording: bench/README.md section 3). Inside `cached_vectorized_map` the map
of the same function on inputs of the same shapes and dtypes runs the function traced
the first time. The graph is the one a fresh trace builds (the same `_pfor_impl` of the same
loop body), with one difference: the mapped tensors are the function's arguments, where a
fresh trace captures them, and TensorFlow captures an eager tensor of at most 128 elements
as a constant. The legacy's layer code (`legacy_keras.layers`) is untouched; inside
`tf.function` (graph mode, `fit`) the original runs, as `vectorized_map` is only replaced
for eager calls.

`tests/legacy/test_vectorized_cache.py` shows the cached and the fresh maps give the same
bits on the legacy trainer's forwards and gradients.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from legacy_keras._tf import tf


@contextlib.contextmanager
def cached_vectorized_map() -> Iterator[dict[tuple, Any]]:
    """`tf.vectorized_map` called eagerly inside the block runs a `tf.function` kept per
    (function, fallback_to_while_loop, warn), which traces once per input signature.

    Yields:
        The cache: key -> `tf.function` (its size shows how many maps were traced).
    """
    original = tf.vectorized_map
    functions: dict[tuple, Any] = {}

    def vectorized_map(fn: Callable, elems: Any, fallback_to_while_loop: bool = True, warn: bool = True) -> Any:
        if not tf.executing_eagerly():  # inside a traced function: the original, traced with it
            return original(fn, elems, fallback_to_while_loop=fallback_to_while_loop, warn=warn)
        key = (fn, fallback_to_while_loop, warn)
        function = functions.get(key)
        if function is None:
            def mapped(mapped_elems):
                return original(fn, mapped_elems, fallback_to_while_loop=fallback_to_while_loop, warn=warn)
            function = functions[key] = tf.function(mapped)
        return function(elems)

    tf.vectorized_map = vectorized_map
    try:
        yield functions
    finally:
        tf.vectorized_map = original
