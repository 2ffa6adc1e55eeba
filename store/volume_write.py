"""The volume's single writer thread and its group commit.

Writes and deletes are queued; the writer takes everything waiting (up to the group-commit
limits), appends it with one writev, makes it durable with one fdatasync, and only then
indexes it and resolves the callers' futures. So nothing is acknowledged or indexed before
it is on disk, and many writes share one sync.

A failed write or sync turns the volume read-only (reason io_error): the batch's callers get
VolumeIOError, the bytes of the batch are cut off again where possible, and the map is not
touched. (After a failed fdatasync the kernel may have dropped the dirty pages; retrying the
sync could "succeed" without the data, so the volume never takes another write.)

A delete appends a tombstone needle (the durable record of the delete) and, after the sync,
sets the DELETED flag in the original needle's header in place.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import xxhash

from store import needle, superblock
from store.errors import (
    ChecksumMismatch,
    NeedleTooLarge,
    QueueFull,
    StoreError,
    VolumeFull,
    VolumeIOError,
    VolumeNotWritable,
)
from store.storage import Buffer
from store.volume_state import Reason, read_only

if TYPE_CHECKING:
    from store.volume import Volume

log = logging.getLogger("pinhole.store")

UNIT = needle.NEEDLE_ALIGNMENT_BYTES
# How far past its size limit a volume takes repair writes (see _commit).
REPAIR_HEADROOM_BYTES_MAX: Final = 1024 * 1024 * 1024
_DELETED_FLAG_BYTE = bytes([needle.FLAG_DELETED])


@dataclass(frozen=True, slots=True)
class PutResult:
    offset: int
    length: int  # needle bytes, padding included
    checksum: int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int  # needles deleted (0: nothing live matched)


AnyFuture = Future[Any] | asyncio.Future[Any]


def _new_future(loop: asyncio.AbstractEventLoop | None) -> AnyFuture:
    # An asyncio future when the caller waits on an event loop (the node), else a
    # thread-safe concurrent future (tools, tests).
    return loop.create_future() if loop is not None else Future()


class _Put:
    __slots__ = ("alt_key", "cookie", "data", "data_checksum", "future", "key", "loop", "repair")

    def __init__(
        self,
        key: int,
        alt_key: int,
        cookie: int,
        data: bytes | bytearray | memoryview,
        data_checksum: int | None,
        loop: asyncio.AbstractEventLoop | None,
        repair: bool,
    ) -> None:
        self.key = key
        self.alt_key = alt_key
        self.cookie = cookie
        self.data = data
        self.data_checksum = data_checksum
        self.loop = loop
        self.repair = repair
        self.future = _new_future(loop)


class _Delete:
    __slots__ = ("alt_key", "future", "key", "loop")

    def __init__(
        self, key: int, alt_key: int | None, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        self.key = key
        self.alt_key = alt_key
        self.loop = loop
        self.future = _new_future(loop)


class _Call:
    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: Future[Any] = Future()


_Op = _Put | _Delete | _Call


def _resolve(items: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for fut, value, ok in items:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class _Completions:
    """A batch's results, handed over together: concurrent futures at once, asyncio
    futures with one wake-up of their event loop per batch (not one per write)."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, bool]]] = {}

    def ok(self, op: _Op, value: Any) -> None:
        self._add(op, value, True)

    def fail(self, op: _Op, exc: BaseException) -> None:
        self._add(op, exc, False)

    def _add(self, op: _Op, value: Any, ok: bool) -> None:
        if op.loop is None:
            fut = op.future
            if not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
        else:
            self._by_loop.setdefault(op.loop, []).append((op.future, value, ok))

    def flush(self) -> None:
        for loop, items in self._by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
        self._by_loop.clear()


class VolumeWriter:
    def __init__(self, volume: Volume) -> None:
        self._volume = volume
        self._limits = volume.limits
        self._queue: deque[_Op] = deque()
        self._cond = threading.Condition()
        self.queued_needles = 0
        self.queued_bytes = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"v{volume.id}-writer", daemon=True)
        self._thread.start()

    # -- submission (any thread) -------------------------------------------------------------

    def submit_put(
        self,
        key: int,
        alt_key: int,
        cookie: int,
        data: bytes | bytearray | memoryview,
        data_checksum: int | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        repair: bool = False,
    ) -> AnyFuture:
        if len(data) > self._limits.needle_data_bytes_max:
            raise NeedleTooLarge(
                f"{len(data)} bytes exceed the {self._limits.needle_data_bytes_max}-byte limit"
            )
        if not (
            0 <= key <= needle.KEY_MAX
            and 0 <= alt_key <= needle.ALT_KEY_MAX
            and 0 <= cookie <= needle.COOKIE_MAX
        ):
            raise ValueError("key, alt_key or cookie out of range")
        op = _Put(key, alt_key, cookie, data, data_checksum, loop, repair)
        self._enqueue(op, len(data))
        return op.future

    def submit_delete(
        self, key: int, alt_key: int | None, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> AnyFuture:
        op = _Delete(key, alt_key, loop)
        self._enqueue(op, 0)
        return op.future

    def submit_call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Runs fn on the writer thread, in order with the queued writes (for state changes
        and the compaction switch)."""
        op = _Call(fn)
        self._enqueue(op, 0, bounded=False)
        return op.future

    def _enqueue(self, op: _Op, nbytes: int, *, bounded: bool = True) -> None:
        with self._cond:
            if self._stopping:
                raise VolumeNotWritable("the volume is closing")
            if bounded and (
                self.queued_needles >= self._limits.write_queue_needles_max
                or self.queued_bytes + nbytes > self._limits.write_queue_bytes_max
            ):
                self._volume.writes_refused += 1
                raise QueueFull(f"volume {self._volume.id}: write queue is full")
            self._queue.append(op)
            if bounded:
                self.queued_needles += 1
                self.queued_bytes += nbytes
            self._cond.notify()

    def stop(self) -> None:
        """Lets the queued operations finish, then stops the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the writer thread ---------------------------------------------------------------------

    def _take_batch(self) -> list[_Op] | None:
        limits = self._limits
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if limits.group_commit_delay_ms_max > 0 and len(self._queue) == 1:
                self._cond.wait(limits.group_commit_delay_ms_max / 1000)
            batch: list[_Op] = []
            nbytes = 0
            while self._queue:
                op = self._queue[0]
                if isinstance(op, _Call):
                    if not batch:  # a call runs alone, between batches
                        batch.append(self._queue.popleft())
                    break
                size = len(op.data) if isinstance(op, _Put) else 0
                if batch and (
                    len(batch) >= limits.group_commit_needles_max
                    or nbytes + size > limits.group_commit_bytes_max
                ):
                    break
                batch.append(self._queue.popleft())
                nbytes += size
            if not isinstance(batch[0], _Call):
                self.queued_needles -= len(batch)
                self.queued_bytes -= nbytes
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            done = _Completions()
            try:
                if isinstance(batch[0], _Call):
                    self._run_call(batch[0])
                else:
                    self._commit(batch, done)  # type: ignore[arg-type]
            except BaseException as e:  # never leave a caller waiting
                log.exception("v%d: writer failed", self._volume.id)
                for op in batch:
                    done.fail(op, e)
            done.flush()

    @staticmethod
    def _run_call(op: _Call) -> None:
        try:
            result = op.fn()
        except BaseException as e:
            op.future.set_exception(e)
        else:
            op.future.set_result(result)

    def _commit(self, batch: list[_Put | _Delete], done: _Completions) -> None:
        vol = self._volume
        gen = vol.generation
        state = vol.state
        start = vol.end
        pos = start
        buffers: list[Buffer] = []
        # What the batch does once durable, in plan order: ("put", key, alt, offset,
        # length) and ("delete", key, alt, old_offset_units, old_length_units).
        effects: list[tuple[str, int, int, int, int]] = []
        put_results: list[tuple[_Put, PutResult]] = []
        delete_results: list[tuple[_Delete, DeleteResult]] = []
        # Entries this batch changes, so that later ops in the batch see earlier ones.
        pending: dict[tuple[int, int], tuple[int, int] | None] = {}
        became_full = False
        # A full volume must still take the repair of a corrupt needle (compaction, which
        # would make room, stops at corrupt needles), so repairs get a bounded headroom.
        repair_limit = min(
            vol.limits.size_bytes_max + REPAIR_HEADROOM_BYTES_MAX,
            superblock.OFFSET_UNITS_MAX * UNIT,
        )

        for op in batch:
            if isinstance(op, _Put):
                if not (state.accepts_repairs if op.repair else state.accepts_writes):
                    why = state.mode.value + (f" ({state.reason.value})" if state.reason else "")
                    done.fail(op, VolumeNotWritable(f"volume {vol.id} is {why}"))
                    continue
                if op.data_checksum is not None and (
                    xxhash.xxh3_64_intdigest(op.data) != op.data_checksum
                ):
                    done.fail(op, ChecksumMismatch("the data does not match its checksum"))
                    continue
                length = needle.needle_length(len(op.data))
                if pos + length > (repair_limit if op.repair else vol.limits.size_bytes_max):
                    became_full = became_full or not op.repair
                    done.fail(op, VolumeFull(f"volume {vol.id} is full"))
                    continue
                header, tail = needle.encode_parts(
                    key=op.key, alt_key=op.alt_key, cookie=op.cookie, data=op.data
                )
                buffers += (header, op.data, tail)
                checksum = int.from_bytes(tail[8:16], "little")
                put_results.append((op, PutResult(pos, length, checksum)))
                effects.append(("put", op.key, op.alt_key, pos, length))
                pending[(op.key, op.alt_key)] = (pos // UNIT, length // UNIT)
                pos += length
                continue
            if not state.accepts_deletes:
                done.fail(op, VolumeNotWritable(f"volume {vol.id} is read-only after an I/O error"))
                continue
            if op.alt_key is None:
                alts = set(gen.map.alt_keys(op.key))
                alts.update(a for (k, a) in pending if k == op.key)
            else:
                alts = {op.alt_key}
            deleted = 0
            for alt in sorted(alts):
                loc = (
                    pending[(op.key, alt)] if (op.key, alt) in pending else gen.map.get(op.key, alt)
                )
                if loc is None:
                    continue
                header, tail = needle.encode_parts(
                    key=op.key, alt_key=alt, cookie=0, data=b"", flags=needle.FLAG_TOMBSTONE
                )
                buffers += (header, tail)
                pos += len(header) + len(tail)
                effects.append(("delete", op.key, alt, loc[0], loc[1]))
                pending[(op.key, alt)] = None
                deleted += 1
            delete_results.append((op, DeleteResult(deleted)))

        if buffers:
            try:
                gen.file.write(buffers, start)
                gen.file.datasync()
            except OSError as e:
                ops: list[_Put | _Delete] = [p for p, _ in put_results]
                ops += [d for d, _ in delete_results]
                self._fail(start, e, ops, done)
                return
            vol.syncs += 1
        self._apply(effects)
        vol.end = pos
        for put, result in put_results:
            done.ok(put, result)
        for delete, dresult in delete_results:
            done.ok(delete, dresult)
        if became_full and vol.state.accepts_writes:
            vol.set_state(read_only(Reason.FULL, "size limit reached"))
        if vol.checkpoint_due():
            vol.checkpoint_in_background()

    def _apply(self, effects: list[tuple[str, int, int, int, int]]) -> None:
        """Indexes a durable batch in plan order, keeping the live counters."""
        vol = self._volume
        gen = vol.generation
        m = gen.map
        for kind, key, alt, a, b in effects:
            if kind == "put":
                offset, length = a, b
                prev = m.get(key, alt)
                if prev is None:
                    vol.needles_live += 1
                else:
                    vol.bytes_live -= prev[1] * UNIT
                m.put(key, alt, offset // UNIT, length // UNIT)
                vol.bytes_live += length
                vol.writes += 1
                vol.write_bytes += length
                continue
            old_offset_units, old_length_units = a, b
            m.delete(key, alt)
            vol.needles_live -= 1
            vol.bytes_live -= old_length_units * UNIT
            vol.deletes += 1
            try:
                # Advisory: the tombstone is the durable record; the flag makes the needle
                # read as deleted even to a reader without the map (verify, f4 migration).
                gen.file.write([_DELETED_FLAG_BYTE], old_offset_units * UNIT + needle.FLAGS_OFFSET)
            except OSError:
                log.warning("v%d: could not flag a deleted needle in place", vol.id)

    def _fail(
        self, start: int, error: OSError, ops: list[_Put | _Delete], done: _Completions
    ) -> None:
        vol = self._volume
        vol.sync_failures += 1
        log.error(
            "v%d: write/sync failed at offset %d: %s; the volume is now read-only",
            vol.id,
            start,
            error,
        )
        try:
            vol.set_state(read_only(Reason.IO_ERROR, f"{error.__class__.__name__}: {error}"))
        except (OSError, StoreError):
            vol.set_state(read_only(Reason.IO_ERROR, str(error)), persist=False)
        try:
            # Unacknowledged bytes must not come back as needles when the volume reopens.
            vol.generation.file.truncate(start)
            vol.generation.file.datasync()
        except OSError:
            pass
        exc = VolumeIOError(f"volume {vol.id}: {error}")
        for op in ops:
            done.fail(op, exc)


def write_all(
    volume: Volume,
    items: Iterable[tuple[int, int, int, bytes | bytearray | memoryview]],
    *,
    in_flight_max: int = 4096,
) -> int:
    """Writes (key, alt_key, cookie, data) items with at most `in_flight_max` waiting, so
    group commit batches them while memory stays bounded. Blocks; returns the count."""
    pending: list[AnyFuture] = []
    count = 0
    for key, alt_key, cookie, data in items:
        pending.append(volume.writer.submit_put(key, alt_key, cookie, data))
        count += 1
        if len(pending) >= in_flight_max:
            for f in pending:
                f.result()
            pending.clear()
    for f in pending:
        f.result()
    return count


def wait_idle(volume: Volume, timeout_s: float = 30.0) -> None:
    """Blocks until everything queued before the call is done (tests, shutdown)."""
    volume.writer.submit_call(lambda: None).result(timeout=timeout_s)
