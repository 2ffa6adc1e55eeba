"""The file-system surface the store uses, as two small protocols.

Everything in store/ that touches disk goes through `Storage` (a directory) and
`VolumeFile` (one open file). OsStorage is the real thing; tests/store/twin.py holds an
in-memory twin with the same protocol that models what survives a power cut and injects
faults (EIO, ENOSPC, torn writes, bit flips). Keep this surface small so the twin stays
faithful.

Durability contract (what the twin models): bytes written to a file are durable only after
`datasync()` on that file; a created, renamed or removed name is durable only after
`sync_dir()`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

Buffer = bytes | bytearray | memoryview

# Linux caps one writev at IOV_MAX buffers.
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class VolumeFile(Protocol):
    @property
    def name(self) -> str: ...

    def size(self) -> int: ...

    def read(self, length: int, offset: int) -> bytes:
        """Up to `length` bytes at `offset` (short only at end of file). May block."""
        ...

    def read_nowait(self, length: int, offset: int) -> bytes | bytearray | None:
        """Like read, but None instead of waiting for the device (page-cache miss)."""
        ...

    def write(self, buffers: Sequence[Buffer], offset: int) -> None:
        """Writes the buffers back to back at `offset`, all of them or raises OSError."""
        ...

    def datasync(self) -> None: ...

    def truncate(self, size: int) -> None: ...

    def close(self) -> None: ...


class Storage(Protocol):
    @property
    def root(self) -> str: ...

    def open(self, name: str, *, create: bool = False) -> VolumeFile: ...

    def exists(self, name: str) -> bool: ...

    def list(self) -> list[str]: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replaces dst with src (durable after sync_dir)."""
        ...

    def remove(self, name: str) -> None: ...

    def sync_dir(self) -> None: ...

    def free_bytes(self) -> int: ...


def write_file_atomic(storage: Storage, name: str, buffers: Sequence[Buffer]) -> None:
    """Replaces `name` with the buffers' bytes so that a crash leaves either the old or the
    new content: write a temp file, sync it, rename it over, sync the directory."""
    tmp = name + ".tmp"
    f = storage.open(tmp, create=True)
    try:
        f.truncate(0)
        f.write(buffers, 0)
        f.datasync()
    finally:
        f.close()
    storage.rename(tmp, name)
    storage.sync_dir()


def read_file(storage: Storage, name: str) -> bytes:
    f = storage.open(name)
    try:
        size = f.size()
        return f.read(size, 0)
    finally:
        f.close()


class OsVolumeFile:
    """A real file. Reads bypass Python's buffering (os.pread/preadv); writes use pwritev."""

    __slots__ = ("_fd", "_name")

    def __init__(self, path: str, *, create: bool, random_access: bool = True) -> None:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self._fd = os.open(path, flags, 0o644)
        self._name = path
        if random_access:
            # Needle reads are random: read-ahead would only evict other needles.
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)

    @property
    def name(self) -> str:
        return self._name

    @property
    def fd(self) -> int:
        return self._fd

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def read(self, length: int, offset: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) == length or not data:
            return data
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(self._fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def read_into(self, buf: memoryview, offset: int) -> int:
        """Fills `buf` from `offset`; the bytes read, fewer only at the end of the file.
        For a caller that reuses one buffer: no fresh memory per read."""
        got = 0
        while got < len(buf):
            n = os.preadv(self._fd, [buf[got:]], offset + got)
            if not n:
                break
            got += n
        return got

    def read_nowait(self, length: int, offset: int) -> bytearray | None:
        buf = bytearray(length)
        try:
            got = os.preadv(self._fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise
        if got < length:
            # Part of the range is not cached (or it is end of file): let the blocking
            # path decide which.
            return None
        return buf

    def write(self, buffers: Sequence[Buffer], offset: int) -> None:
        pending = [memoryview(b).cast("B") for b in buffers if len(b)]
        while pending:
            chunk = pending[:IOV_MAX]
            written = os.pwritev(self._fd, chunk, offset)
            offset += written
            # Drop what was written; a short write resumes inside a buffer.
            while written and pending:
                head = pending[0]
                if written >= len(head):
                    written -= len(head)
                    pending.pop(0)
                else:
                    pending[0] = head[written:]
                    written = 0

    def datasync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def evict(self) -> None:
        """Drops the file's clean pages from the page cache (benchmarks, cold reads)."""
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsStorage:
    def __init__(self, root: str | Path) -> None:
        self._root = str(root)
        os.makedirs(self._root, exist_ok=True)

    @property
    def root(self) -> str:
        return self._root

    def _path(self, name: str) -> str:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"bad file name {name!r}")
        return os.path.join(self._root, name)

    def open(self, name: str, *, create: bool = False) -> OsVolumeFile:
        return OsVolumeFile(self._path(name), create=create)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def list(self) -> list[str]:
        return sorted(os.listdir(self._root))

    def rename(self, src: str, dst: str) -> None:
        os.replace(self._path(src), self._path(dst))

    def remove(self, name: str) -> None:
        os.unlink(self._path(name))

    def sync_dir(self) -> None:
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def free_bytes(self) -> int:
        st = os.statvfs(self._root)
        return st.f_bavail * st.f_frsize
