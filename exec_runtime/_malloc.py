"""glibc malloc settings for a process that moves bulk output.

Every output chunk is a fresh buffer of up to 256 KiB, several times over (the pipe
read, the frame, the decoded chunk). glibc serves buffers that large with ``mmap`` and
gives freed memory back to the kernel soon after, so each one costs a page fault per
4 KiB when first touched. On the benchmark VM that is about 1 µs per page: ~0.3 ms per
MB per copy, more than the copy itself. Serving them from the heap (a higher mmap
threshold) and keeping a few MB of freed heap for reuse (a fixed trim threshold)
removes most of it; see docs/performance.md for the figures.

Our own processes (``serve``, ``run``) apply it at start. A library must not retune
its host's allocator behind its back, so an embedding host that streams a lot of
output opts in: ``exec_runtime.tune_malloc()``, once, at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Final

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

MMAP_THRESHOLD: Final = 4 << 20
"""Buffers below this come from the heap (glibc's default starts at 128 KiB)."""
TRIM_THRESHOLD: Final = 4 << 20
"""Free memory kept at the top of the heap before it is returned to the kernel."""


def tune_malloc() -> bool:
    """Serve buffers under 4 MiB from the heap and keep up to 4 MiB of freed heap,
    process-wide. False where there is no glibc ``mallopt`` (then it is a no-op).

    Costs at most a few MB of RSS kept for reuse; saves a page fault per 4 KiB of
    every big buffer (on the client: ~0.8 ms of kernel time per MB of output).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # e.g. musl
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
