"""Keeping the needle map's memory returned to the system.

The map builds and frees large numpy arrays as its runs merge. glibc's malloc raises its
mmap threshold after each large free (up to 32 MiB), after which such arrays come from the
heap and their freed space is kept by the process: RSS then overstates the map several
times. A fixed threshold keeps large arrays on mmap (returned on free), and malloc_trim
after a merge hands back what the heap still holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

log = logging.getLogger("pinhole.store")

_M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD_BYTES: Final = 128 * 1024

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
    """Fixes glibc's mmap threshold (call once at process start). False when not glibc."""
    lib = _glibc()
    if lib is None:
        return False
    return bool(lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim_heap() -> None:
    """Returns free heap memory to the system (after a large merge)."""
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
