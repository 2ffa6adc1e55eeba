"""An in-memory twin of store.storage.OsStorage that models durability and injects faults.

It exists only to test our own storage code against what disks do:
- durability: a file's bytes are durable only after datasync(); names only after
  sync_dir(). `crash()` returns the storage as it would be found after a power cut: durable
  bytes, plus each unsynced write kept whole, torn (a prefix of its 512-byte sectors) or
  lost, chosen at random and independently (disks reorder).
- fsyncgate: after a failed datasync the unsynced writes never reach the durable image.
- faults: EIO/ENOSPC on the n-th read/write/sync/truncate/rename/sync_dir, a byte capacity
  (ENOSPC, with the write cut short like a real file system), bit flips.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from store.storage import Buffer

SECTOR_BYTES = 512


class _Inode:
    def __init__(self) -> None:
        self.data = bytearray()  # what reads see (the page cache)
        self.durable = bytearray()  # what survives a power cut
        self.unsynced: list[tuple[int, bytes] | int] = []  # writes (offset, bytes) or truncates


@dataclass
class _Fault:
    op: str
    err: int
    name: str | None
    skip: int
    times: int


@dataclass
class TwinStats:
    reads: int = 0
    writes: int = 0
    syncs: int = 0
    dir_syncs: int = 0
    ops: dict[str, int] = field(default_factory=dict)


class TwinFile:
    def __init__(self, storage: TwinStorage, name: str, inode: _Inode) -> None:
        self._storage = storage
        self._name = name
        self._inode = inode
        self._closed = False
        self.nowait_misses = False

    @property
    def name(self) -> str:
        return self._name

    def _check(self, op: str) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "closed file")
        self._storage._maybe_fail(op, self._name)

    def size(self) -> int:
        self._check("stat")
        return len(self._inode.data)

    def read(self, length: int, offset: int) -> bytes:
        self._check("read")
        self._storage.stats.reads += 1
        return bytes(self._inode.data[offset : offset + length])

    def read_nowait(self, length: int, offset: int) -> bytes | None:
        if self.nowait_misses or self._storage.nowait_misses:
            return None
        data = self.read(length, offset)
        return data if len(data) == length else None

    def write(self, buffers: Sequence[Buffer], offset: int) -> None:
        self._check("write")
        self._storage.stats.writes += 1
        payload = b"".join(bytes(b) for b in buffers)
        room = self._storage._room(self._inode, offset, len(payload))
        short = room < len(payload)
        payload = payload[:room]
        ino = self._inode
        end = offset + len(payload)
        if len(ino.data) < end:
            ino.data.extend(bytes(end - len(ino.data)))
        ino.data[offset:end] = payload
        ino.unsynced.append((offset, payload))
        if short:
            raise OSError(errno.ENOSPC, "No space left on device (twin)")

    def datasync(self) -> None:
        ino = self._inode
        try:
            self._check("sync")
        except OSError:
            # fsyncgate: the kernel may mark the pages clean; they never become durable.
            ino.unsynced.clear()
            raise
        self._storage.stats.syncs += 1
        ino.durable = bytearray(ino.data)
        ino.unsynced.clear()

    def truncate(self, size: int) -> None:
        self._check("truncate")
        ino = self._inode
        if size < len(ino.data):
            del ino.data[size:]
        else:
            ino.data.extend(bytes(size - len(ino.data)))
        ino.unsynced.append(size)

    def close(self) -> None:
        self._closed = True


class TwinStorage:
    def __init__(self, root: str = "/twin") -> None:
        self._root = root
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._faults: list[_Fault] = []
        self.capacity_bytes: int | None = None
        self.nowait_misses = False
        self.stats = TwinStats()

    # -- the Storage protocol ------------------------------------------------------------------

    @property
    def root(self) -> str:
        return self._root

    def open(self, name: str, *, create: bool = False) -> TwinFile:
        self._maybe_fail("open", name)
        ino = self._names.get(name)
        if ino is None:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "No such file (twin)", name)
            ino = self._names[name] = _Inode()
        return TwinFile(self, name, ino)

    def exists(self, name: str) -> bool:
        return name in self._names

    def list(self) -> list[str]:
        return sorted(self._names)

    def rename(self, src: str, dst: str) -> None:
        self._maybe_fail("rename", src)
        if src not in self._names:
            raise FileNotFoundError(errno.ENOENT, "No such file (twin)", src)
        self._names[dst] = self._names.pop(src)

    def remove(self, name: str) -> None:
        self._maybe_fail("remove", name)
        if name not in self._names:
            raise FileNotFoundError(errno.ENOENT, "No such file (twin)", name)
        del self._names[name]

    def sync_dir(self) -> None:
        self._maybe_fail("sync_dir", None)
        self.stats.dir_syncs += 1
        self._durable_names = dict(self._names)

    def free_bytes(self) -> int:
        if self.capacity_bytes is None:
            return 1 << 40
        return max(0, self.capacity_bytes - self._used())

    # -- faults --------------------------------------------------------------------------------

    def fail(
        self,
        op: str,
        err: int = errno.EIO,
        *,
        name: str | None = None,
        skip: int = 0,
        times: int = 1,
    ) -> None:
        """The (skip+1)-th `op` (read/write/sync/truncate/rename/remove/sync_dir/open/stat)
        on `name` (any when None) and the times-1 after it raise OSError(err)."""
        self._faults.append(_Fault(op, err, name, skip, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _maybe_fail(self, op: str, name: str | None) -> None:
        self.stats.ops[op] = self.stats.ops.get(op, 0) + 1
        for f in self._faults:
            if f.op != op or (f.name is not None and f.name != name) or f.times <= 0:
                continue
            if f.skip > 0:
                f.skip -= 1
                continue
            f.times -= 1
            raise OSError(f.err, f"{os.strerror(f.err)} (twin fault on {op})")

    def _used(self) -> int:
        return sum(len(i.data) for i in set(self._names.values()))

    def _room(self, ino: _Inode, offset: int, length: int) -> int:
        if self.capacity_bytes is None:
            return length
        growth = max(0, offset + length - len(ino.data))
        spare = self.capacity_bytes - self._used()
        if growth <= spare:
            return length
        return max(0, length - (growth - spare))

    def flip_bit(self, name: str, offset: int, bit: int = 0) -> None:
        """Flips one bit in cache and on disk: bit rot."""
        ino = self._names[name]
        ino.data[offset] ^= 1 << bit
        if offset < len(ino.durable):
            ino.durable[offset] ^= 1 << bit

    def raw(self, name: str) -> bytes:
        return bytes(self._names[name].data)

    # -- power cut -----------------------------------------------------------------------------

    def crash(
        self, rng: random.Random | None = None, *, keep_unsynced: str = "random"
    ) -> TwinStorage:
        """The storage after a power cut. keep_unsynced: "random" (each unsynced write kept,
        torn or lost), "none" or "all"."""
        rng = rng or random.Random()
        after = TwinStorage(self._root)
        after.capacity_bytes = self.capacity_bytes
        copies: dict[int, _Inode] = {}
        for name, ino in self._durable_names.items():
            new = copies.get(id(ino))
            if new is None:
                new = copies[id(ino)] = _Inode()
                image = bytearray(ino.durable)
                for op in ino.unsynced:
                    mode = (
                        keep_unsynced
                        if keep_unsynced != "random"
                        else rng.choice(["all", "none", "torn"])
                    )
                    if mode == "none":
                        continue
                    if isinstance(op, int):
                        if op < len(image):
                            del image[op:]
                        else:
                            image.extend(bytes(op - len(image)))
                        continue
                    offset, payload = op
                    if mode == "torn" and len(payload) > SECTOR_BYTES:
                        sectors = rng.randrange(1, -(-len(payload) // SECTOR_BYTES))
                        payload = payload[: sectors * SECTOR_BYTES]
                    end = offset + len(payload)
                    if len(image) < end:
                        image.extend(bytes(end - len(image)))
                    image[offset:end] = payload
                new.data = image
                new.durable = bytearray(image)
            after._names[name] = new
        after._durable_names = dict(after._names)
        return after
