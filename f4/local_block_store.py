"""Blocks as files: one directory per node (failure domain) under a root.

A node whose directory is missing is down (BlockUnreachable). Writes go to a temporary file
in the node's directory, are fsync'd, renamed into place and the directory fsync'd, so a
name that exists is a complete object even after a kill -9 or power loss; leftover
temporaries are removed by `clean_temporaries`.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from f4 import sidecar
from f4.block_store import Buffer, put_pieces, sidecar_of
from f4.errors import BlockMissing, BlockUnreachable
from store import native

TEMP_SUFFIX: Final = ".tmp"
# read_cached's read in C (bytes not zeroed before the read) when the store's extension is
# built and PINHOLE_STORE_NATIVE is not 0; else preadv into a bytearray.
_native = native.for_f4()
_pread_cached: Final = _native.pread_cached if _native is not None else None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WouldBlock(Exception):
    """A read with nowait=True found part of its range outside the page cache."""


def read_exact(
    path: str | Path,
    label: str,
    offset: int,
    length: int,
    missing: type[BlockMissing] = BlockMissing,
) -> bytes:
    """Exactly `length` bytes of the file at `offset`, else `missing` (absent or shorter)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise missing(f"{label} does not exist") from None
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise missing(f"{label} is shorter than {offset + length} bytes")
    return data


def read_cached(
    path: str | Path,
    label: str,
    offset: int,
    length: int,
    missing: type[BlockMissing] = BlockMissing,
) -> bytes | bytearray:
    """read_exact from the page cache only (preadv with RWF_NOWAIT): WouldBlock when any
    of the range is not there (or the file is shorter), and the caller reads again the
    blocking way, which also tells a short file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise missing(f"{label} does not exist") from None
    try:
        if _pread_cached is not None:
            data = _pread_cached(fd, length, offset)
            if data is None:
                raise WouldBlock(label)
            return data
        buf = bytearray(length)
        try:
            got = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
        except OSError as e:  # EAGAIN; EOPNOTSUPP where the filesystem cannot
            raise WouldBlock(label) from e
    finally:
        os.close(fd)
    if got != length:
        raise WouldBlock(label)
    return buf


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Asks the kernel to start writing these dirty pages now (sync_file_range WRITE, no
    wait): a block's commit then finds most of it on disk instead of flushing it all, with
    13 other blocks, in its fsync. Not a durability step: the commit's fsync is."""
    if length and _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _libc_sync_file_range() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE_WRITE: Final = 2  # linux/fs.h
_sync_file_range = _libc_sync_file_range()


class LocalBlockWriter:
    def __init__(self, directory: Path, name: str) -> None:
        self._dir = directory
        self._final = directory / name
        self._temp = directory / f"{name}.{os.getpid()}{TEMP_SUFFIX}"
        self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._written = 0

    def write(self, data: Buffer) -> None:
        view = memoryview(data)
        start = self._written
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._written += n
        start_writeback(self._fd, start, self._written - start)

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self._temp, self._final)
        fsync_dir(self._dir)

    def abort(self) -> None:
        os.close(self._fd)
        self._temp.unlink(missing_ok=True)


class LocalBlockStore:
    def __init__(self, root: str | Path, nodes: Iterable[str]) -> None:
        self.root = Path(root)
        self._nodes = list(nodes)
        for n in self._nodes:
            (self.root / n).mkdir(parents=True, exist_ok=True)

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def node_up(self, node: str) -> bool:
        return (self.root / node).is_dir()

    def _dir(self, node: str) -> Path:
        d = self.root / node
        if node not in self._nodes or not d.is_dir():
            raise BlockUnreachable(f"node {node} is unreachable")
        return d

    def put(self, node: str, name: str, pieces: Iterable[Buffer]) -> None:
        put_pieces(self.open_writer(node, name), pieces)

    def open_writer(self, node: str, name: str) -> LocalBlockWriter:
        return LocalBlockWriter(self._dir(node), name)

    def get_range(self, node: str, name: str, offset: int, length: int) -> bytes:
        return read_exact(self._dir(node) / name, f"{node}/{name}", offset, length)

    def get_checked_range(self, node: str, block: str, offset: int, length: int) -> bytes:
        d = self._dir(node)
        return sidecar.read_checked(
            lambda name, at, n: read_exact(d / name, f"{node}/{name}", at, n),
            lambda name: self.size(node, name),
            block,
            sidecar_of(block),
            offset,
            length,
        )

    def get(self, node: str, name: str) -> bytes:
        try:
            return (self._dir(node) / name).read_bytes()
        except FileNotFoundError:
            raise BlockMissing(f"{node}/{name} does not exist") from None

    def exists(self, node: str, name: str) -> bool:
        return self.node_up(node) and (self.root / node / name).is_file()

    def size(self, node: str, name: str) -> int:
        try:
            return (self._dir(node) / name).stat().st_size
        except FileNotFoundError:
            raise BlockMissing(f"{node}/{name} does not exist") from None

    def delete(self, node: str, name: str) -> None:
        d = self._dir(node)
        (d / name).unlink(missing_ok=True)
        fsync_dir(d)

    def list(self, node: str) -> list[str]:
        return sorted(p.name for p in self._dir(node).iterdir() if not p.name.endswith(TEMP_SUFFIX))

    def clean_temporaries(self) -> int:
        """Removes temporaries left by writers that never committed; returns how many."""
        removed = 0
        for node in self._nodes:
            if self.node_up(node):
                for p in (self.root / node).glob(f"*{TEMP_SUFFIX}"):
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed
