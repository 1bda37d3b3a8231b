"""Keep freed memory in the process (glibc mallopt) for long CPU evaluations.

glibc serves large allocations with mmap and returns them to the kernel on free, so a loop that allocates the
same big query batch every step page-faults it back in each time: an MNIST evaluation here spent half its CPU
time in the kernel (stime 888 s vs utime 903 s). Raising the mmap and trim thresholds (what the environment
variables MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=8589934592 do at start-up) keeps those
blocks in the heap for reuse. No-op where glibc is not the allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = (1 << 31) - 1, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Sets glibc's mmap and trim thresholds (mallopt takes an int: capped at 2**31 - 1); returns whether both
    calls succeeded. Called by `zol2l reproduce` at start."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    cap = (1 << 31) - 1  # mallopt takes an int
    ok = mallopt(_M_MMAP_THRESHOLD, min(int(mmap_threshold), cap)) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, min(int(trim_threshold), cap)) == 1
    return bool(ok)
