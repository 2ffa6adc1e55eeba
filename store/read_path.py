"""The read path: needles served to the event loop, and raw volume-file reads for pulls.

A read first tries the page cache without waiting (`read_cached`, store/volume_read.py);
a miss goes to the device (`read`: io_uring or threads, at most `read_queue_depth` at once)
behind the disk queue's bound `read_queue_max` (QueueFull beyond). Internal reads (no
cookie in hand: replica repair, copies between nodes) take the same checks. Raw reads of a
volume file (`read_dat`) run on the transfer pool and never go past the durable end.

With the C extension loaded (store/native), a plain GET's page-cache hit is answered by
`answer_cached`: one C call reads, checks and frames it; every other outcome goes back to
`read_cached`, which judges it exactly as without the extension.

Every outcome is counted in `counters` (store/node_statistics.ReadCounters); only the event
loop touches them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from store import volume_read
from store.client import DatChunk
from store.device_reader import DeviceReader
from store.errors import (
    NeedleNotFound,
    OffsetPastEnd,
    QueueFull,
    StoreBadRequest,
    StoreError,
)
from store.native import HotRead
from store.node_statistics import ReadCounters
from store.storage import OsVolumeFile
from store.volume import UNIT, Volume
from store.volume_pull import DAT_READ_BYTES_MAX
from store.volume_read import NeedleRead


class ReadPath:
    def __init__(
        self,
        volume: Callable[[int], Volume],
        *,
        read_queue_depth: int,
        read_queue_max: int,
        transfer_pool: Executor,
        hot_read: HotRead | None = None,
    ) -> None:
        self._volume = volume
        # The C hot read, or None for the pure-Python path (store/native.load).
        self.hot_read = hot_read
        self._device = DeviceReader(read_queue_depth)
        self._read_queue_max = read_queue_max
        self._transfer_pool = transfer_pool
        self.counters = ReadCounters()

    def close(self) -> None:
        self._device.close()

    def read_cached(self, vid: int, key: int, alt_key: int, cookie: int) -> NeedleRead | None:
        """The needle if its bytes are in the page cache; None when the device is needed.
        Never blocks. Raises NeedleNotFound, CorruptNeedle, VolumeNotOnNode."""
        vol = self._volume(vid)
        c = self.counters
        try:
            got = volume_read.read_cached(vol, key, alt_key, cookie)
        except NeedleNotFound:
            c.reads_not_found += 1
            raise
        except StoreError:
            c.reads_corrupt += 1
            raise
        if got is not None:
            c.reads += 1
            c.reads_from_cache += 1
            c.read_bytes += got.data_size
        return got

    def answer_cached(
        self, vid: int, key: int, alt_key: int, cookie: int
    ) -> tuple[bytes, memoryview] | int:
        """A page-cache hit through the C hot read (requires `hot_read`): (the ETag and
        caching header lines, the data), every check of read_cached passed on the bytes
        served. `hot_read.MISS`: read from the device. `hot_read.REFER`: anything else (not
        found, wrong cookie, corrupt, a file the C call cannot read): call read_cached, which
        judges and counts it. Never blocks. Raises VolumeNotOnNode."""
        hot = self.hot_read
        assert hot is not None
        vol = self._volume(vid)
        gen = vol.pin_generation()
        try:
            loc = gen.map.get(key, alt_key)
            file = gen.file
            if loc is None or type(file) is not OsVolumeFile:
                return hot.REFER
            got = hot.answer(file.fd, loc[0] * UNIT, loc[1] * UNIT, key, alt_key, cookie)
        finally:
            gen.unpin()
        if type(got) is tuple:
            c = self.counters
            c.reads += 1
            c.reads_from_cache += 1
            c.read_bytes += len(got[1])
        return got

    async def read(self, vid: int, key: int, alt_key: int, cookie: int) -> NeedleRead:
        """Reads a needle that missed the page cache from the device."""
        got, _ = await self._read_checked(vid, key, alt_key, cookie)
        c = self.counters
        c.reads += 1
        c.reads_from_disk += 1
        c.read_bytes += got.data_size
        return got

    async def read_internal(self, vid: int, key: int, alt_key: int) -> tuple[NeedleRead, int]:
        """(the verified needle, its cookie) without the cookie in hand. The same checks as
        a read; deleted needles are NeedleNotFound."""
        result = await self._read_checked(vid, key, alt_key, None)
        self.counters.reads_internal += 1
        return result

    async def _read_checked(
        self, vid: int, key: int, alt_key: int, cookie: int | None
    ) -> tuple[NeedleRead, int]:
        """(the verified needle, its cookie): the disk queue's bound and the error counters
        shared by reads. `cookie` None takes the stored one (internal reads) and tries the
        page cache before the device."""
        vol = self._volume(vid)
        c = self.counters
        if c.reads_waiting >= self._read_queue_max:
            c.reads_refused += 1
            raise QueueFull("too many reads waiting for the disk")
        c.reads_waiting += 1
        try:
            gen, offset, length = volume_read.locate_pinned(vol, key, alt_key)
            try:
                raw = gen.file.read_nowait(length, offset) if cookie is None else None
                if raw is None:
                    raw = await self._device.read(gen.file, length, offset)
            finally:
                gen.unpin()
            if cookie is None:
                cookie = volume_read.stored_cookie(raw)
            got = volume_read.checked(
                raw, key=key, alt_key=alt_key, cookie=cookie, offset=offset, length=length
            )
        except NeedleNotFound:
            c.reads_not_found += 1
            raise
        except StoreError:
            c.reads_corrupt += 1
            raise
        except OSError:
            c.read_errors += 1
            raise
        finally:
            c.reads_waiting -= 1
        return got, cookie

    async def read_dat(self, vid: int, offset: int, length: int) -> DatChunk:
        """Up to `length` (<= DAT_READ_BYTES_MAX) raw bytes of the volume file from
        `offset`, never past the durable end, with that end and the compaction revision of
        the file they were read from. OffsetPastEnd when offset > end."""
        if not 0 <= length <= DAT_READ_BYTES_MAX:
            raise StoreBadRequest(f"length must be within 0..{DAT_READ_BYTES_MAX}")
        if offset < 0:
            raise StoreBadRequest("offset must not be negative")
        vol = self._volume(vid)

        def read() -> DatChunk:
            while True:
                gen = vol.pin_generation()
                end = vol.end
                # Compaction swaps the generation, then the end: the end read while `gen`
                # is still current belongs to it (or to a file that is only longer).
                if vol.generation is gen:
                    break
                gen.unpin()
            try:
                end = min(end, gen.file.size())
                if offset > end:
                    raise OffsetPastEnd(f"offset {offset} is past the volume's end {end}")
                data = gen.file.read(min(length, end - offset), offset) if length else b""
                return DatChunk(data, end, gen.superblock.compaction_revision)
            finally:
                gen.unpin()

        chunk = await asyncio.get_running_loop().run_in_executor(self._transfer_pool, read)
        self.counters.dat_reads += 1
        self.counters.dat_read_bytes += len(chunk.data)
        return chunk
