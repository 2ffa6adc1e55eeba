"""The disks of an f4 storage node: one directory `<blocks_root>/<node>` per node (failure
domain) it serves, read and written on behalf of f4/node_http.py. Everything here blocks and
is thread-safe: the HTTP layer calls it from its disk threads, never from the event loop.

Invariants:
- An object that exists is complete. An upload writes the temporary file
  `<name>.<upload id>.tmp` in the node's directory; its commit fsyncs the file, renames it
  into place and fsyncs the directory, exactly as LocalBlockWriter does. A whole-object
  put (`put`, at most one chunk) does the same in one call, through a temporary of its
  own. Temporaries are removed at start (`clean_temporaries`: a killed process leaves no
  half object behind, only a temporary nobody can name), on abort, and once idle for
  UPLOAD_IDLE_S_MAX.
- An upload grows strictly in order: a chunk is written only at the upload's current size
  (UploadConflict otherwise), by one thread at a time, and never past OBJECT_BYTES_MAX.
- A served node whose directory is missing is unreachable (NodeUnreachable, a lost disk):
  the directories are created at start, never while serving, so a disk that disappears is
  reported instead of silently replaced by an empty directory on another filesystem.
- Names are checked (f4.block_store.object_name_ok) before any path is built from them.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from f4 import sidecar
from f4.block_store import object_name_ok, sidecar_of
from f4.config import BLOCK_BYTES_MAX, F4Node
from f4.errors import (
    BadBlockRequest,
    BadObjectName,
    NodeNotServed,
    NodeUnreachable,
    ObjectMissing,
    UploadConflict,
    UploadsBusy,
    UploadUnknown,
)
from f4.local_block_store import (
    TEMP_SUFFIX,
    fsync_dir,
    read_cached,
    read_exact,
    start_writeback,
)

# One read answers at most this many bytes (a range, or a whole object).
RANGE_BYTES_MAX: Final = 64 << 20
# No object grows past this (the largest block f4's config allows).
OBJECT_BYTES_MAX: Final = BLOCK_BYTES_MAX
# Uploads open at once in one storage node process, and how long one may sit unused.
UPLOADS_OPEN_MAX: Final = 256
UPLOAD_IDLE_S_MAX: Final = 600.0
OBJECT_TOO_LARGE: Final = "object_too_large"  # the code of a whole read over RANGE_BYTES_MAX
UPLOAD_ID_BYTES: Final = 16  # random; as hex in URLs
UPLOAD_ID_CHARS: Final = 2 * UPLOAD_ID_BYTES


def upload_id_ok(text: str) -> bool:
    return len(text) == UPLOAD_ID_CHARS and all(ch in "0123456789abcdef" for ch in text)


def node_name_ok(text: str) -> bool:
    try:
        F4Node(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: str
    up: bool
    objects: int
    bytes: int
    free_bytes: int
    uploads_open: int


class _Upload:
    __slots__ = ("directory", "fd", "final", "last_used", "lock", "node", "size", "temp")

    def __init__(self, node: str, directory: Path, name: str, upload_id: str) -> None:
        self.node = node
        self.directory = directory
        self.final = directory / name
        self.temp = directory / f"{name}.{upload_id}{TEMP_SUFFIX}"
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.size = 0
        self.last_used = time.monotonic()
        self.lock = threading.Lock()  # held while a chunk, commit or abort runs

    def discard(self) -> None:
        os.close(self.fd)
        self.temp.unlink(missing_ok=True)


class NodeDisks:
    """The served nodes' directories under `blocks_root`, and the uploads open on them."""

    def __init__(self, blocks_root: Path, nodes: Iterable[str]) -> None:
        self.root = Path(blocks_root)
        self.nodes = list(dict.fromkeys(nodes))
        if not self.nodes:
            raise ValueError("a storage node serves at least one node")
        for n in self.nodes:
            if not node_name_ok(n):
                raise ValueError(f"node name {n!r}: letters, digits, '-', '_', '.' only")
        # Each served node's directory as a path string ending in "/", for the reads.
        self._prefixes = {n: f"{self.root / n}/" for n in self.nodes}
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()

    def create_directories(self) -> None:
        for n in self.nodes:
            (self.root / n).mkdir(parents=True, exist_ok=True)

    # -- names -------------------------------------------------------------------------------

    def directory(self, node: str) -> Path:
        """The node's directory; NodeNotServed / NodeUnreachable."""
        if node not in self.nodes:
            raise self._unserved(node)
        d = self.root / node
        if not d.is_dir():
            raise NodeUnreachable(f"node {node}: its directory {d} is gone")
        return d

    @staticmethod
    def _unserved(node: str) -> BadObjectName | NodeNotServed:
        """What asking for a node this process does not serve raises."""
        if not node_name_ok(node):
            return BadObjectName(f"{node!r} is not a node name")
        return NodeNotServed(f"node {node} is not served here")

    def _path(self, node: str, name: str) -> Path:
        if not object_name_ok(name):
            raise BadObjectName(f"{name!r} is not an f4 object name")
        return self.directory(node) / name

    # -- reads -------------------------------------------------------------------------------

    def read_range(self, node: str, name: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`; ObjectMissing when absent or shorter."""
        if length > RANGE_BYTES_MAX:
            raise BadBlockRequest(f"length {length} is over RANGE_BYTES_MAX ({RANGE_BYTES_MAX})")
        return read_exact(self._path(node, name), f"{node}/{name}", offset, length, ObjectMissing)

    def read_checked(
        self, node: str, block: str, offset: int, length: int, *, nowait: bool = False
    ) -> bytes | bytearray:
        """Exactly `length` bytes of a block at `offset`, checked against the sums of the
        chunks they cover (f4.sidecar.read_checked), else BlockCorrupt: a corrupt range is
        never answered, and the reader needs one request instead of two. `nowait`: from
        the page cache only, else WouldBlock (read_exact)."""
        if length > RANGE_BYTES_MAX:
            raise BadBlockRequest(f"length {length} is over RANGE_BYTES_MAX ({RANGE_BYTES_MAX})")
        try:
            sums = sidecar_of(block)
        except ValueError:
            raise BadBlockRequest(f"{block!r}: only a block's range is read checked") from None
        directory = self._prefixes.get(node)
        if directory is None:
            raise self._unserved(node)
        if not object_name_ok(block):
            raise BadObjectName(f"{block!r} is not an f4 object name")
        label = f"{node}/{block}"

        # Plain string paths and no directory check up front: this runs once per read.
        # A missing file sends the reader to its directory, so a lost disk is still
        # NodeUnreachable and not ObjectMissing.
        def cached(name: str, at: int, n: int) -> bytes | bytearray:
            return read_cached(directory + name, label, at, n, ObjectMissing)

        def blocking(name: str, at: int, n: int) -> bytes:
            return read_exact(directory + name, label, at, n, ObjectMissing)

        rest = (functools.partial(self.size, node), block, sums, offset, length)
        try:
            if nowait:
                return sidecar.read_checked(cached, *rest)
            return sidecar.read_checked(blocking, *rest)
        except ObjectMissing:
            self.directory(node)  # NodeUnreachable when the directory is gone
            raise

    def read_whole(self, node: str, name: str) -> bytes:
        path = self._path(node, name)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > RANGE_BYTES_MAX:
                    raise BadBlockRequest(
                        f"{node}/{name} has {size} bytes, over RANGE_BYTES_MAX "
                        f"({RANGE_BYTES_MAX}): read it by ranges",
                        code=OBJECT_TOO_LARGE,
                    )
                return f.read(size)
        except FileNotFoundError:
            raise ObjectMissing(f"{node}/{name} does not exist") from None

    def size(self, node: str, name: str) -> int:
        try:
            return self._path(node, name).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(f"{node}/{name} does not exist") from None

    def names(self, node: str) -> list[str]:
        d = self.directory(node)
        return sorted(p.name for p in d.iterdir() if not p.name.endswith(TEMP_SUFFIX))

    # -- deletes -----------------------------------------------------------------------------

    def delete(self, node: str, name: str) -> None:
        path = self._path(node, name)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    # -- writes ------------------------------------------------------------------------------

    def put(self, node: str, name: str, data: bytes | bytearray) -> int:
        """Writes a whole object in one call, as an upload and its commit would: a
        temporary file, fsync, rename, directory fsync. Returns its size."""
        final = self._path(node, name)
        temp = final.with_name(f"{name}.{secrets.token_hex(UPLOAD_ID_BYTES)}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            at = 0
            while at < len(view):
                at += os.pwrite(fd, view[at:], at)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temp, final)
        fsync_dir(final.parent)
        return len(view)

    # -- uploads -----------------------------------------------------------------------------

    def begin(self, node: str, name: str) -> str:
        directory = self._path(node, name).parent
        self.expire_idle()
        with self._lock:
            if len(self._uploads) >= UPLOADS_OPEN_MAX:
                raise UploadsBusy(f"{UPLOADS_OPEN_MAX} uploads are open (UPLOADS_OPEN_MAX)")
            upload_id = secrets.token_hex(UPLOAD_ID_BYTES)
            self._uploads[upload_id] = _Upload(node, directory, name, upload_id)
        return upload_id

    def _take(self, node: str, name: str, upload_id: str) -> _Upload:
        """The open upload, locked by the caller's thread (UploadConflict when busy)."""
        if not upload_id_ok(upload_id):
            raise BadBlockRequest("an upload id is 32 lower-case hex digits")
        self._path(node, name)  # names checked, node served and up
        with self._lock:
            up = self._uploads.get(upload_id)
        if up is None or up.node != node or up.final.name != name:
            raise UploadUnknown(f"no open upload {upload_id} of {node}/{name}")
        if not up.lock.acquire(blocking=False):
            raise UploadConflict(f"upload {upload_id} is busy with another request")
        return up

    def append(
        self, node: str, name: str, upload_id: str, offset: int, data: bytes | bytearray
    ) -> int:
        """Writes `data` at `offset`, which must be the upload's size; returns the new size."""
        up = self._take(node, name, upload_id)
        try:
            if offset != up.size:
                raise UploadConflict(f"upload {upload_id} has {up.size} bytes, not {offset}")
            if up.size + len(data) > OBJECT_BYTES_MAX:
                raise BadBlockRequest(f"an object has at most {OBJECT_BYTES_MAX} bytes")
            view = memoryview(data)
            at = offset
            while view:
                n = os.pwrite(up.fd, view, at)
                view, at = view[n:], at + n
            start_writeback(up.fd, offset, at - offset)
            up.size = at
            up.last_used = time.monotonic()
            return up.size
        finally:
            up.lock.release()

    def commit(self, node: str, name: str, upload_id: str) -> int:
        """Makes the object appear durably, whole; returns its size."""
        up = self._take(node, name, upload_id)
        try:
            with self._lock:
                self._uploads.pop(upload_id, None)
            try:
                os.fsync(up.fd)
            except BaseException:
                up.discard()
                raise
            os.close(up.fd)
            os.replace(up.temp, up.final)
            fsync_dir(up.directory)
            return up.size
        finally:
            up.lock.release()

    def abort(self, node: str, name: str, upload_id: str) -> None:
        up = self._take(node, name, upload_id)
        try:
            with self._lock:
                self._uploads.pop(upload_id, None)
            up.discard()
        finally:
            up.lock.release()

    def expire_idle(self, now: float | None = None) -> int:
        """Aborts uploads unused for UPLOAD_IDLE_S_MAX (a writer that died); returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                (i, u)
                for i, u in self._uploads.items()
                if now - u.last_used > UPLOAD_IDLE_S_MAX and not u.lock.locked()
            ]
        return sum(self._drop(i, u) for i, u in idle)

    def abort_all(self, node: str) -> int:
        """Aborts every open upload of `node` (the cell's writer restarts under its lock and
        no earlier upload of it will ever commit); returns how many."""
        self.directory(node)
        with self._lock:
            mine = [(i, u) for i, u in self._uploads.items() if u.node == node]
        return sum(self._drop(i, u) for i, u in mine)

    def _drop(self, upload_id: str, up: _Upload) -> bool:
        if not up.lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._uploads.pop(upload_id, None) is None:
                    return False
            up.discard()
            return True
        finally:
            up.lock.release()

    def clean_temporaries(self) -> int:
        """At start, before serving: removes the temporaries a killed process left."""
        removed = 0
        for node in self.nodes:
            d = self.root / node
            if d.is_dir():
                for p in d.glob(f"*{TEMP_SUFFIX}"):
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

    def close(self) -> None:
        """Aborts the uploads still open (their writers never committed them)."""
        with self._lock:
            left = list(self._uploads.items())
        for upload_id, up in left:
            self._drop(upload_id, up)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> list[NodeStatus]:
        with self._lock:
            open_by_node: dict[str, int] = {}
            for u in self._uploads.values():
                open_by_node[u.node] = open_by_node.get(u.node, 0) + 1
        out = []
        for node in self.nodes:
            d = self.root / node
            objects = size = free = 0
            up = d.is_dir()
            if up:
                try:
                    for entry in os.scandir(d):
                        if not entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                            objects += 1
                            size += entry.stat().st_size
                    st = os.statvfs(d)
                    free = st.f_bavail * st.f_frsize
                except FileNotFoundError:
                    up = False
            out.append(NodeStatus(node, up, objects, size, free, open_by_node.get(node, 0)))
        return out
