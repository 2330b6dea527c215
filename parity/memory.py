"""Giving freed memory back to the operating system between the harness's heavy phases."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_memory() -> bool:
    """Collect cycles (Keras models hold many), then return glibc's free heap pages to the system.

    On roberta-base shapes the legacy model and its gradients leave gigabytes free but still
    resident; the port's models are built next, in the same process or beside it.

    Returns:
        Whether the C library could trim (False where it is not glibc).
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    return bool(trim(0))
