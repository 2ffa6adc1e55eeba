"""A file's pages in the kernel page cache: evict them, warm them, measure what is resident.

`evict` is best effort by nature: the kernel drops only clean, unmapped pages, so it first
fsyncs the file. `resident_fraction` (mincore(2) on a shared read-only mapping) is how a
caller checks that the eviction took.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from pathlib import Path

READ_CHUNK_BYTES = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
_libc.mincore.restype = ctypes.c_int
MAP_FAILED = ctypes.c_void_p(-1).value


EVICT_ATTEMPTS_MAX = 100
EVICT_RETRY_S_MAX = 0.1


def evict(path: Path | str) -> bool:
    """Write back the file's dirty pages, then ask the kernel to drop all its cached pages;
    again, with a growing pause (up to about 8 s in all), while mincore still shows some
    resident: pages written a moment ago, or still on their way to the LRU lists, can
    survive one call. True when no page of the file is left in the page cache."""
    import time

    pause_s = 0.005
    for _ in range(EVICT_ATTEMPTS_MAX):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        if resident_fraction(path) == 0.0:
            return True
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, EVICT_RETRY_S_MAX)
    return False


def evict_tree(root: Path | str) -> int:
    """`evict` every regular file under `root`; the number of files left with no page cached."""
    count = 0
    for directory, _, names in os.walk(root):
        for name in names:
            if evict(os.path.join(directory, name)):
                count += 1
    return count


def warm(path: Path | str) -> int:
    """Read the whole file once so its pages are cached; the number of bytes read."""
    total_bytes = 0
    with open(path, "rb", buffering=0) as file:
        while chunk := file.read(READ_CHUNK_BYTES):
            total_bytes += len(chunk)
    return total_bytes


def resident_fraction(path: Path | str) -> float:
    """Fraction (0.0 to 1.0) of the file's pages now in the page cache; 0.0 if empty."""
    fd = os.open(path, os.O_RDONLY)
    try:
        length_bytes = os.fstat(fd).st_size
        if length_bytes == 0:
            return 0.0
        page_count = (length_bytes + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        address = _libc.mmap(None, length_bytes, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address is None or address == MAP_FAILED:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mmap failed: {os.strerror(errno)}", str(path))
        try:
            vector = (ctypes.c_ubyte * page_count)()
            if _libc.mincore(address, length_bytes, vector) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"mincore failed: {os.strerror(errno)}", str(path))
        finally:
            _libc.munmap(address, length_bytes)
    finally:
        os.close(fd)
    # Linux sets each vector byte to exactly 0 (not resident) or 1 (resident).
    resident_pages = page_count - bytes(vector).count(0)
    return resident_pages / page_count
