"""Tuning glibc's malloc for a store node.

Two kinds of allocation pull in opposite directions:
- needle buffers (one per read and write, 20 KiB to tens of MiB) are allocated and freed
  thousands of times a second. If freed memory goes back to the kernel, every new buffer
  page-faults and is zeroed again (measured: page faults and memcg charging were a large
  share of a cold 100 KiB read). So the heap keeps freed memory (a high trim threshold) and
  buffers up to MMAP_THRESHOLD_BYTES come from it.
- the needle map's runs are large and long-lived; merges free big temporaries. The map
  calls trim_heap() (malloc_trim) after large merges, which returns the heap's free pages
  whatever the trim threshold, so RSS reflects the map and not its history.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

log = logging.getLogger("pinhole.store")

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
TRIM_THRESHOLD_BYTES: Final = 1024 * 1024 * 1024

_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        try:
            lib = ctypes.CDLL(name)
            lib.mallopt  # noqa: B018 - glibc only
            lib.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


def tune_allocator() -> bool:
    """Sets glibc's mmap and trim thresholds (call once at process start). False when the
    C library is not glibc."""
    lib = _glibc()
    if lib is None:
        return False
    ok = lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return bool(ok and lib.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def trim_heap() -> None:
    """Returns free heap memory to the system (after a large merge)."""
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
