"""Keep freed memory in the process for the next allocation of the same size.

A build makes the same few arrays for every chunk (pixels, views, tar headers, a block of
samples), each 0.1 to 2 MB. glibc hands blocks of that size back to the kernel when they are
freed (as separate mappings, or by trimming the top of the heap), so every chunk paid for
fresh pages again: a page fault and the zeroing of every 4 KB page, about a fifth of a
`--recipe none` build's CPU time. With a 32 MB mapping threshold and a 64 MB trim threshold
such blocks come from the heap and go back to it, and the pages stay. Peak memory is what it
was: the blocks are reused, not kept beside new ones.

Set by `ipmix shards build` for its own process and in the build's worker processes; a program
that calls `build_shards` itself keeps its own allocator settings.
"""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit machines
TRIM_THRESHOLD = 64 << 20

_done = False


def keep_freed_memory() -> bool:
    """Set the thresholds for this process (once); False where the C library has no mallopt
    (not glibc), which changes nothing but speed."""
    global _done
    if _done:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
