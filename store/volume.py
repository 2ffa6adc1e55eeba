"""A volume: one append-only file of needles, its in-RAM needle map and its writer.

The work is split by verb, as the file list shows:
    volume_loading.py   create, open, crash recovery (torn tails, compaction roll forward/back)
    volume_write.py     the single writer thread: group commit, deletes, sync failures
    volume_read.py      one read per needle, checks, cookie
    volume_compact.py   online compaction
    volume_checking.py  verify

Concurrency: reads run on any thread without locks (the event loop for page-cache hits,
executor threads otherwise); every mutation runs on the volume's writer thread. Compaction
swaps the whole `Generation` (file + map) in one assignment; a reader pins the generation it
uses so that its file stays open until the read is done.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from store import index_file, needle, volume_state
from store.needle_map import NeedleMap
from store.storage import Storage, VolumeFile
from store.superblock import SUPERBLOCK_BYTES, Superblock
from store.volume_config import VolumeLimits
from store.volume_state import Mode, Reason, VolumeState

if TYPE_CHECKING:
    from store.volume_compact import Compaction
    from store.volume_write import DeleteResult, PutResult, VolumeWriter

UNIT: Final = needle.NEEDLE_ALIGNMENT_BYTES


def data_name(vid: int) -> str:
    return f"v{vid}.dat"


def index_name(vid: int) -> str:
    return f"v{vid}.idx"


def state_name(vid: int) -> str:
    return f"v{vid}.state"


def compact_data_name(vid: int) -> str:
    return f"v{vid}.cpd"


def compact_index_name(vid: int) -> str:
    return f"v{vid}.cpx"


def compact_marker_name(vid: int) -> str:
    return f"v{vid}.cpm"


class Generation:
    """A volume file together with the needle map that indexes it."""

    __slots__ = ("_closed", "_lock", "_pins", "_retired", "file", "map", "superblock")

    def __init__(self, file: VolumeFile, map_: NeedleMap, sb: Superblock) -> None:
        self.file = file
        self.map = map_
        self.superblock = sb
        self._pins = 0
        self._retired = False
        self._closed = False
        self._lock = threading.Lock()

    def pin(self) -> bool:
        """Keeps the file open until unpin(); False if it is already closed."""
        with self._lock:
            if self._closed:
                return False
            self._pins += 1
            return True

    def unpin(self) -> None:
        with self._lock:
            self._pins -= 1
            close = self._retired and self._pins == 0 and not self._closed
            if close:
                self._closed = True
        if close:
            self.file.close()

    def retire(self) -> None:
        """Closes the file once no reader holds it."""
        with self._lock:
            self._retired = True
            close = self._pins == 0 and not self._closed
            if close:
                self._closed = True
        if close:
            self.file.close()


@dataclass(frozen=True, slots=True)
class VolumeStatistics:
    volume_id: int
    mode: str
    reason: str | None
    detail: str
    state_changed_unix_s: float  # when the mode last changed (sealed: no write after it)
    size_bytes: int
    size_bytes_max: int
    needles_live: int
    bytes_live: int
    garbage_bytes: int
    garbage_ratio: float
    writes: int
    write_bytes: int
    deletes: int
    syncs: int
    sync_failures: int
    writes_refused: int
    queue_needles: int
    queue_bytes: int
    index_covered_bytes: int
    index_checkpoints: int
    needle_map_bytes: int
    compaction_revision: int
    compactions: int
    compacting: bool
    opened_scan_needles: int
    opened_torn_bytes: int
    opened_corrupt_needles: int


class Volume:
    """Use store.volume_loading.create_volume / open_volume to get one."""

    def __init__(
        self,
        *,
        storage: Storage,
        vid: int,
        limits: VolumeLimits,
        generation: Generation,
        end: int,
        state: VolumeState,
        needles_live: int,
        bytes_live: int,
        index_covered_bytes: int,
        index_bytes: int,
    ) -> None:
        self.storage = storage
        self.id = vid
        self.limits = limits
        self._gen = generation
        # Next append offset == bytes durable and applied. Written by the writer thread only.
        self.end = end
        self._state = state
        self.needles_live = needles_live
        self.bytes_live = bytes_live
        self.index_covered_bytes = index_covered_bytes
        self.index_bytes = index_bytes
        self.index_checkpoints = 0
        self.writes = 0
        self.write_bytes = 0
        self.deletes = 0
        self.syncs = 0
        self.sync_failures = 0
        self.writes_refused = 0
        self.compactions = 0
        self.opened_scan_needles = 0
        self.opened_torn_bytes = 0
        self.opened_corrupt_needles = 0
        self.compaction: Compaction | None = None
        self._checkpoint_lock = threading.Lock()
        self._checkpoint_thread: threading.Thread | None = None
        self._closed = False
        from store.volume_write import VolumeWriter

        self.writer: VolumeWriter = VolumeWriter(self)

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> VolumeState:
        return self._state

    @property
    def generation(self) -> Generation:
        return self._gen

    @property
    def superblock(self) -> Superblock:
        return self._gen.superblock

    def pin_generation(self) -> Generation:
        while True:
            gen = self._gen
            if gen.pin():
                return gen

    def set_state(self, state: VolumeState, *, persist: bool = True) -> None:
        """Changes the state (call on the writer thread, or before it starts)."""
        if self._state.mode is Mode.SEALED and state.mode is not Mode.SEALED:
            raise ValueError("a sealed volume stays sealed")
        self._state = state
        if persist:
            volume_state.save(self.storage, state_name(self.id), state)

    # -- operations (thread-safe; they return futures) ----------------------------------------

    def put(
        self,
        key: int,
        alt_key: int,
        cookie: int,
        data: bytes | bytearray | memoryview,
        *,
        data_checksum: int | None = None,
        repair: bool = False,
    ) -> Future[PutResult]:
        """Queues a write; the future resolves once it is durable. `data_checksum` (xxh3_64
        of the data, from the sender) is checked on the writer thread before anything is
        written. A `repair` write is also taken by a volume read-only because it is full or
        by an operator's order (volume_state.VolumeState.accepts_repairs)."""
        return self.writer.submit_put(  # type: ignore[return-value]
            key, alt_key, cookie, data, data_checksum, repair=repair
        )

    def put_async(
        self,
        key: int,
        alt_key: int,
        cookie: int,
        data: bytes | bytearray | memoryview,
        *,
        data_checksum: int | None = None,
        repair: bool = False,
    ) -> asyncio.Future[PutResult]:
        """put() for a caller on an event loop: the loop is woken once per group commit,
        not once per write."""
        loop = asyncio.get_running_loop()
        fut = self.writer.submit_put(
            key, alt_key, cookie, data, data_checksum, loop=loop, repair=repair
        )
        return fut  # type: ignore[return-value]

    def delete(self, key: int, alt_key: int | None = None) -> Future[DeleteResult]:
        """Deletes (key, alt_key), or every variant of `key` when alt_key is None."""
        return self.writer.submit_delete(key, alt_key)  # type: ignore[return-value]

    def delete_async(self, key: int, alt_key: int | None = None) -> asyncio.Future[DeleteResult]:
        loop = asyncio.get_running_loop()
        return self.writer.submit_delete(key, alt_key, loop=loop)  # type: ignore[return-value]

    def change_state(self, state: VolumeState) -> Future[VolumeState]:
        """Applies a state change in order with the writes already queued."""

        def apply() -> VolumeState:
            if state.mode is Mode.WRITABLE and self.is_full():
                raise ValueError("the volume is full")
            self.set_state(state)
            return state

        return self.writer.submit_call(apply)

    def is_full(self) -> bool:
        return self.end + needle.needle_length(0) > self.limits.size_bytes_max

    # -- index checkpoints --------------------------------------------------------------------

    def checkpoint_due(self) -> bool:
        tail = self.end - self.index_covered_bytes
        return tail >= max(self.limits.index_checkpoint_bytes_min, 16 * self.index_bytes)

    def write_checkpoint(self) -> None:
        """Writes an index checkpoint of everything applied so far (blocking)."""
        with self._checkpoint_lock:
            gen = self._gen
            # All needles below `covered` are applied to the map before it is read: the
            # checkpoint may hold effects of later needles too, which replay idempotently.
            covered = self.end
            run = gen.map.snapshot()
            if gen is not self._gen:
                return  # compaction switched files meanwhile and wrote its own index
            checkpoint = index_file.IndexCheckpoint(
                volume_id=self.id,
                compaction_revision=gen.superblock.compaction_revision,
                covered_bytes=covered,
                run=run,
            )
            index_file.write(self.storage, index_name(self.id), checkpoint)
            self.index_covered_bytes = covered
            self.index_bytes = run.nbytes
            self.index_checkpoints += 1

    def checkpoint_in_background(self) -> None:
        """Starts a checkpoint unless one is running (called by the writer after a batch)."""
        t = self._checkpoint_thread
        if t is not None and t.is_alive():
            return
        t = threading.Thread(target=self._checkpoint_quietly, name=f"v{self.id}-checkpoint")
        t.daemon = True
        self._checkpoint_thread = t
        t.start()

    def _checkpoint_quietly(self) -> None:
        import logging

        try:
            self.write_checkpoint()
        except Exception:  # a failed checkpoint only lengthens the next open's scan
            logging.getLogger("pinhole.store").exception("v%d: index checkpoint failed", self.id)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self, *, checkpoint: bool = True) -> None:
        """Stops the writer (queued writes finish first), writes a final checkpoint so the
        next open is fast, and closes the file."""
        if self._closed:
            return
        self._closed = True
        self.writer.stop()
        t = self._checkpoint_thread
        if t is not None:
            t.join()
        if (
            checkpoint
            and self.state.reason is not Reason.IO_ERROR
            and (self.index_covered_bytes != self.end)
        ):
            try:
                self.write_checkpoint()
            except OSError:
                pass
        self._gen.map.wait_for_merges()
        self._gen.retire()

    def statistics(self) -> VolumeStatistics:
        state = self._state
        gen = self._gen
        used = self.end - SUPERBLOCK_BYTES
        garbage = max(0, used - self.bytes_live)
        compaction = self.compaction
        return VolumeStatistics(
            volume_id=self.id,
            mode=state.mode.value,
            reason=state.reason.value if state.reason else None,
            detail=state.detail,
            state_changed_unix_s=state.changed_unix_s,
            size_bytes=self.end,
            size_bytes_max=self.limits.size_bytes_max,
            needles_live=self.needles_live,
            bytes_live=self.bytes_live,
            garbage_bytes=garbage,
            garbage_ratio=garbage / used if used > 0 else 0.0,
            writes=self.writes,
            write_bytes=self.write_bytes,
            deletes=self.deletes,
            syncs=self.syncs,
            sync_failures=self.sync_failures,
            writes_refused=self.writes_refused,
            queue_needles=self.writer.queued_needles,
            queue_bytes=self.writer.queued_bytes,
            index_covered_bytes=self.index_covered_bytes,
            index_checkpoints=self.index_checkpoints,
            needle_map_bytes=gen.map.memory_bytes(),
            compaction_revision=gen.superblock.compaction_revision,
            compactions=self.compactions,
            compacting=compaction is not None and not compaction.done,
            opened_scan_needles=self.opened_scan_needles,
            opened_torn_bytes=self.opened_torn_bytes,
            opened_corrupt_needles=self.opened_corrupt_needles,
        )
