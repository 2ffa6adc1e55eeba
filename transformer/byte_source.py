"""Where the container check reads an upload's bytes from: a bytes object already in memory,
or a file read in bounded pieces (os.pread), so that a 256 MiB video or a 30 MiB photo on
disk is never held whole to validate it. The check reads box and chunk headers and the
tables it parses, and scans whole only what it must (PNG CRCs, JPEG entropy-coded data)
in READ_BLOCK_BYTES pieces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Protocol

# The most a scan asks for at once: big enough that the per-call cost vanishes, small
# enough that memory stays flat.
READ_BLOCK_BYTES: Final = 1024 * 1024


class ByteSource(Protocol):
    """Random access to a file's bytes. `read` returns exactly `length` bytes at `offset`;
    callers keep 0 <= offset and offset + length <= size, and a read outside is a bug of
    theirs (ValueError), never a verdict on the bytes."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> memoryview: ...


def check_range(size: int, offset: int, length: int) -> None:
    """Raises ValueError unless [offset, offset + length) lies within a source of `size`."""
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"read of {length} bytes at {offset} outside a source of {size} bytes")


class BytesSource:
    """A source over bytes in memory; reads are views, not copies."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    @property
    def size(self) -> int:
        return len(self._view)

    def read(self, offset: int, length: int) -> memoryview:
        check_range(len(self._view), offset, length)
        return self._view[offset : offset + length]


class FileSource:
    """A source over an open file, read with pread (no shared file position). The size is
    the file's at opening; a file that shrinks afterwards raises OSError on a short read."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> memoryview:
        check_range(self._size, offset, length)
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise OSError(f"short read of {len(data)} of {length} bytes: the file changed")
        return memoryview(data)


@contextmanager
def open_file_source(path: Path) -> Iterator[FileSource]:
    """A FileSource over `path`, closed on exit. Blocking: run it on a thread. Raises
    OSError when the file cannot be opened."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        yield FileSource(fd)
    finally:
        os.close(fd)
