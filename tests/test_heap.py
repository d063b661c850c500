"""daemon/heap.py: glibc keeps serving big blocks with mmap after big blocks were freed."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Frees a 4 MiB block (which, left alone, raises glibc's mmap threshold to 4 MiB), then
# allocates 1 MiB and prints how many bytes glibc holds in mmapped blocks while it lives.
PROBE = """
import ctypes, sys
from infersight.daemon.heap import fix_mmap_threshold
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MI
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
fixed = fix_mmap_threshold() if sys.argv[1] == "fix" else None
big = libc.malloc(4 << 20)
libc.free(big)
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
print(fixed, libc.mallinfo2().hblkhd - before)
libc.free(block)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _mmapped(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                         check=True, env=env).stdout.split()
    return out[0], int(out[1])


@glibc
def test_without_the_fix_glibc_serves_a_block_below_a_freed_big_one_from_its_heap():
    assert _mmapped("leave") == ("None", 0), "the probe no longer shows glibc's adjustment"


@glibc
def test_with_the_fix_big_blocks_stay_mmapped_and_go_back_when_freed():
    fixed, mmapped = _mmapped("fix")
    assert fixed == "True" and mmapped >= 1 << 20


def test_an_operators_own_threshold_wins(monkeypatch):
    from infersight.daemon.heap import fix_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
