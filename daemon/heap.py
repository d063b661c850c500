"""glibc's heap for a long-running agent: large blocks go back to the kernel when freed.

glibc serves a malloc of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB) with its own mmap,
unmapped on free, but by default it raises that threshold to the size of every such block
freed (up to 32 MiB), so that after the first big JSON answer or append batch, blocks of
that size come from the heap instead and stay there, free but resident, split by whatever
small allocations land between them. On the bench's agent (bench/_rss.py) that was 11-14 MB
of free heap; fixing the threshold at its default brought it to about 5 MB. Setting the
threshold explicitly is what turns the adjustment off (mallopt(3)).

Only glibc has ``mallopt``; elsewhere (musl, macOS) this does nothing. An operator's own
``MALLOC_MMAP_THRESHOLD_`` in the environment wins.
"""
from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3             # mallopt(3) parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``nbytes``; True when glibc took it, False where the
    environment already sets one or the C library is not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        # the process's own symbols, the C library's among them (find_library would run ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))
