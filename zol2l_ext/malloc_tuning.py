"""Keep freed memory in the process (glibc mallopt), so that big per-step buffers are not page-faulted in again.

glibc serves large allocations with mmap and returns them to the kernel on free (blocks above its dynamic
mmap threshold, which never grows past 32 MiB on 64-bit systems), so a loop that allocates the same big query
batch every step page-faults it back in each time. The blocks we cannot reuse ourselves are the black box's:
the conv activations of a 2100-image MNIST batch are ~100 MB, and a model runs on whatever its forward
allocates. An MNIST evaluation here spent half its CPU time in the kernel (stime 888 s vs utime 903 s); raising
the mmap and trim thresholds (what MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ do at start-up) keeps those
blocks in the heap for reuse.

`keep_freed_memory_once` is what the library calls, at the first black-box call of the process
(`zo.estimator.evaluate`), so that every user (the attack, the trainer, a Python caller) runs without the churn
and without an environment variable. It leaves glibc alone where the user has chosen its settings
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``) or
opted out (``ZOL2L_KEEP_FREED_MEMORY=0``). No-op where glibc is not the allocator.

The cost: memory freed below the thresholds is kept by the process instead of returned to the system, so its
resident size stays at its peak (an attack's peak is one step's buffers, which the next step needs again).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Optional

__all__ = ["keep_freed_memory", "keep_freed_memory_once", "ENV_KEEP_FREED_MEMORY", "MMAP_THRESHOLD",
           "TRIM_THRESHOLD"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = (1 << 31) - 1  # mallopt takes an int

#: "0" (or "false", "no", "off") turns the library's own tuning off.
ENV_KEEP_FREED_MEMORY = "ZOL2L_KEEP_FREED_MEMORY"
# 1 GiB: larger than any one step buffer of the shipped tasks (CIFAR-10's 5100-image conv activations are
# ~330 MB), so they all come from the heap; bigger blocks still get their own mapping.
MMAP_THRESHOLD = 1 << 30
# Above the mmap threshold so that the heap's top is not trimmed between steps either.
TRIM_THRESHOLD = _INT_MAX

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_applied: Optional[bool] = None


def _glibc():
    """glibc's handle, or None where the C library is not glibc (musl and macOS have no such mallopt)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(mmap_threshold: int = _INT_MAX, trim_threshold: int = _INT_MAX) -> bool:
    """Sets glibc's mmap and trim thresholds (capped at 2**31 - 1); returns whether both calls succeeded.
    Unconditional: `keep_freed_memory_once` is the library's guarded call."""
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, min(int(mmap_threshold), _INT_MAX)) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, min(int(trim_threshold), _INT_MAX)) == 1
    return bool(ok)


def _user_chose() -> bool:
    """Whether the environment already says how glibc or this library should treat freed memory."""
    if os.environ.get(ENV_KEEP_FREED_MEMORY, "").strip().lower() in ("0", "false", "no", "off"):
        return True
    if any(k in os.environ for k in _USER_SETTINGS):
        return True
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory_once() -> bool:
    """`keep_freed_memory` (MMAP_THRESHOLD, TRIM_THRESHOLD) the first time it is called in a process, unless the
    user chose otherwise (see the module docstring); returns whether the library's setting is in force."""
    global _applied
    if _applied is None:
        _applied = False if _user_chose() else keep_freed_memory(MMAP_THRESHOLD, TRIM_THRESHOLD)
    return _applied
