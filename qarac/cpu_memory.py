"""glibc's allocator told to keep freed memory for reuse during CPU training.

A training step allocates and frees the same activation-sized blocks (megabytes
each) again and again. By default glibc serves blocks above its mmap threshold
with fresh `mmap`s and gives the top of the heap back to the system once more
than its trim threshold is free, so the next step touches new pages and pays a
page fault (and the kernel's zeroing) per 4 KiB. With the mmap threshold at its
largest value (32 MiB on 64-bit systems) and the trim threshold above any step's
working set, freed blocks are reused in place (tests/test_cpu_memory.py: no
page faults where glibc's defaults fault two thirds of the pages again). Measured
at mid size on an AMD EPYC (2 cores, a machine shared with other jobs): 640 and
715 ms a step against 748 and 780 ms in two in-process pairs; in the command-level
bench the difference is within its run-to-run noise (bench/README.md section
10). The cost is a resident set that does not shrink between steps.

What is computed is unchanged: this is where the process's memory comes from,
not what is in it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): larger values are refused.
MMAP_THRESHOLD = 32 * 2 ** 20
TRIM_THRESHOLD = 2 ** 30


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns: whether both were set (False off Linux or without glibc's `mallopt`: nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
