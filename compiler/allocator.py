"""Host memory: keep freed tensor memory in the process instead of handing it back to the OS.

glibc maps every large allocation afresh and unmaps it on free, so a training step that
allocates and frees the same E-sized buffers every step pays a page fault per 4 KiB page,
every step (about 3 ms for one 16 MB tensor on a 2-core machine). An E-I layer allocates
more such buffers than a BatchNorm layer, so it pays more. Raising glibc's mmap and trim
thresholds serves them from the heap, which stays mapped: memory is reused, not refaulted.
The process keeps its peak resident size between steps, as a CUDA caching allocator does.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_MAX = 32 << 20            # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; False (and nothing changed) where it is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX))
