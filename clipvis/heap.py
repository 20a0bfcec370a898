"""glibc heap settings for inference on CPU: large buffers reused instead of faulted in again.

Every frame allocates and frees the same large buffers (tens of MB each at 480×640). By default
glibc serves such buffers with mmap and unmaps them on free (and trims the heap top), so the next
frame faults every page in again and the kernel zeroes it: about 110,000 page faults a frame for
the R50 model at 480×640, a tenth of its time. `keep_freed_memory` makes glibc serve every
allocation from its heap and keep what is freed there for reuse; resident memory then stays at the
high-water mark of one frame. `release_free_memory` gives the free heap memory back to the system
(after a video). Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap top before free() gives memory back (mallopt's largest)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Serve large allocations from the heap (no mmap) and keep freed memory there; once per process.
    Returns whether the settings took effect."""
    libc = _libc()
    applied = libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc heap keeps freed memory: %s", applied)
    return applied


def release_free_memory() -> None:
    """Give the heap's free memory back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
