"""Keep the C allocator from mapping and unmapping a fresh region for every image message.

glibc serves allocations above its mmap threshold (128 KiB at start) with a new
mmap and returns them with munmap, so every 270 KB raw image (and each of its
copies in protobuf and gRPC) pays page faults and TLB flushes: measured here,
building + serializing + parsing one 300x300 RGB step response took ~700 us by
default and ~100 us with the threshold raised. ``tune_allocator()`` raises it
once per process; it is a no-op where glibc's ``mallopt`` is unavailable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_allocator(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds; True when applied (now or before)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    return _tuned
