"""Pulling a whole volume from another store node (replica moves and re-replication).

The copy goes into files that no part of the store takes for a volume:

    v<id>.dat.pull   the bytes copied so far, at their offsets in the source's file
    v<id>.pull.json  {version, volume_id, source, compaction_revision}: what they are a copy of

The sidecar is written (atomically) before the first byte of a copy, so a temp file is
always described by one. A pull resumes from the temp file's size when the sidecar names the
same source and the source's compaction revision is unchanged; otherwise it starts over (a
compaction rewrites the whole file, and two replicas of a volume are not byte-identical).
Every chunk of the source (`GET /volumes/{id}/dat`) carries the revision it was read from,
so a compaction on the source mid-copy is noticed at the next chunk.

Once the copy reaches the source's durable end: datasync, then every needle is scanned and
checked (a framing break anywhere fails the pull and discards the copy: it would otherwise
be cut off as a torn tail when the volume opens), then rename to v<id>.dat, directory sync,
sidecar removed, and the volume is opened by the ordinary loading path (which indexes every
needle). So a crash (kill -9, power cut) at any point leaves either no volume and the temp
files, which the node ignores at start-up and a later pull resumes, or the whole volume.

Bytes are copied as they are in the source, DELETED flags and garbage included: deletes the
source took after the copy passed a needle arrive as tombstones later in the file, or, once
the copy is done, are redelivered by the directory.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from common.jobs.local import Throttle, until_done
from store import superblock
from store.client import DatChunk
from store.errors import FormatError, OffsetPastEnd, PullFailed, VolumeExists
from store.needle_scan import Damage, scan
from store.storage import Storage, VolumeFile, read_file, write_file_atomic
from store.superblock import SUPERBLOCK_BYTES
from store.volume import Volume, data_name, index_name, state_name
from store.volume_config import VolumeLimits
from store.volume_loading import open_volume

log = logging.getLogger("pinhole.store")

T = TypeVar("T")

SIDECAR_FORMAT_VERSION: Final = 1
# One request to the source reads at most this much (the source's own limit is the same).
DAT_READ_BYTES_MAX: Final = 8 * 1024 * 1024
# Throttled pulls ask for about a quarter second of their rate at once, at least this.
PULL_CHUNK_BYTES_MIN: Final = 64 * 1024
# The temp file is synced every this many bytes, so a power cut costs at most this much
# of a resumed copy (a resumed copy is checked whole at the end anyway).
PULL_SYNC_BYTES: Final = 64 * 1024 * 1024
# A pull starts over at most this many times (source compacted, temp file broken).
PULL_RESTARTS_MAX: Final = 3


def pull_data_name(vid: int) -> str:
    return f"v{vid}.dat.pull"


def pull_sidecar_name(vid: int) -> str:
    return f"v{vid}.pull.json"


def pull_leftovers(storage: Storage) -> dict[int, int]:
    """{volume id: bytes copied} of the interrupted pulls in a directory (blocking)."""
    found: dict[int, int] = {}
    for name in storage.list():
        if name.endswith(".dat.pull") and name[1:].partition(".")[0].isdigit():
            vid = int(name[1:].partition(".")[0])
            f = storage.open(name)
            try:
                found[vid] = f.size()
            finally:
                f.close()
    return found


def remove_pull_files(storage: Storage, vid: int) -> bool:
    """Removes a pull's temp files (blocking); True when there were any."""
    names = [n for n in (pull_data_name(vid), pull_sidecar_name(vid)) if storage.exists(n)]
    names += [n + ".tmp" for n in names if storage.exists(n + ".tmp")]
    for n in names:
        storage.remove(n)
    if names:
        storage.sync_dir()
    return bool(names)


# Reads [offset, offset + length) of the source's volume file; OffsetPastEnd when the offset
# is past the source's durable end.
ReadDat = Callable[[int, int], Awaitable[DatChunk]]
# Runs a blocking call on a worker thread.
RunBlocking = Callable[[Callable[[], Any]], Awaitable[Any]]
Progress = Callable[[int, int], None]  # (bytes of the copy, the source's end)


@dataclass(frozen=True, slots=True)
class PullReport:
    volume_id: int
    source: str
    compaction_revision: int
    bytes_total: int
    bytes_copied: int  # by this run (a resumed pull copied the rest before)
    resumed_from: int
    restarts: int
    needles: int
    corrupt_needles: int
    elapsed_s: float


class VolumePull:
    """One pull of volume `vid` from `source` (a URL, recorded in the sidecar). Use copy(),
    then install() on a worker thread. `throttle` paces the copy and carries the cancel of
    its job; cancelling the task running copy() stops it too (the temp files stay, for a
    later pull to resume)."""

    def __init__(
        self,
        *,
        storage: Storage,
        vid: int,
        source: str,
        read_dat: ReadDat,
        run_blocking: RunBlocking,
        throttle: Throttle | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.storage = storage
        self.vid = vid
        self.source = source
        self._read_dat = read_dat
        self._run = run_blocking
        self._throttle = throttle if throttle is not None else Throttle()
        self._progress = progress
        rate = self._throttle.bytes_per_s
        self.chunk_bytes = (
            DAT_READ_BYTES_MAX
            if rate is None
            else int(min(DAT_READ_BYTES_MAX, max(PULL_CHUNK_BYTES_MIN, rate / 4)))
        )
        self.position = 0
        self.volume_end = 0
        self.resumed_from = 0
        self.bytes_copied = 0
        self.restarts = 0
        self.revision: int | None = None
        self.needles = 0
        self.corrupt_needles = 0
        self._t0 = time.monotonic()

    async def _blocking(self, fn: Callable[[], T]) -> T:
        # A cancelled pull still waits for the thread's file operation to end, so that the
        # file is never closed under a write in flight.
        result: T = await until_done(self._run(fn))
        return result

    async def copy(self) -> None:
        """Copies the source's file into the temp file, durably, and checks it whole."""
        name = pull_data_name(self.vid)
        f: VolumeFile = await self._blocking(lambda: self.storage.open(name, create=True))
        try:
            await self._copy_into(f)
            await self._blocking(f.datasync)
            await self._blocking(lambda: self._check(f))
        finally:
            await self._blocking(f.close)

    async def _copy_into(self, f: VolumeFile) -> None:
        pos = await self._blocking(lambda: self._resume_position(f))
        self.position = self.resumed_from = pos
        unsynced = 0
        while True:
            chunk: DatChunk | None
            try:
                chunk = await self._read_dat(pos, self.chunk_bytes)
            except OffsetPastEnd:
                if pos == 0:
                    raise PullFailed(f"volume {self.vid}: the source has no data") from None
                chunk = None  # our copy is longer than the source's file: not a prefix of it
            if chunk is None or chunk.compaction_revision != self.revision:
                # The temp file is not (the start of) a copy of the source's current file.
                if self.revision is not None or chunk is None:
                    self.restarts += 1
                    if self.restarts > PULL_RESTARTS_MAX:
                        raise PullFailed(f"volume {self.vid}: restarted too often, giving up")
                    log.info("v%d: pull starts over (the source's file changed)", self.vid)
                revision = chunk.compaction_revision if chunk is not None else None
                await self._blocking(functools.partial(self._start_over, f, revision))
                self.resumed_from = 0
                if chunk is None or pos != 0:
                    pos = self.position = 0
                    continue
            data = chunk.data
            self.volume_end = chunk.volume_end
            if data:
                await self._blocking(functools.partial(f.write, [data], pos))
                pos += len(data)
                self.position = pos
                self.bytes_copied += len(data)
                if self._progress is not None:
                    self._progress(pos, chunk.volume_end)
                unsynced += len(data)
                if unsynced >= PULL_SYNC_BYTES:
                    await self._blocking(f.datasync)
                    unsynced = 0
            if pos >= chunk.volume_end:
                if pos > chunk.volume_end:
                    end = chunk.volume_end
                    await self._blocking(functools.partial(f.truncate, end))
                    self.position = end
                return
            if not data:
                raise PullFailed(
                    f"volume {self.vid}: the source sent nothing at offset {pos}"
                    f" before its end {chunk.volume_end}"
                )
            await self._throttle.wait_async(len(data))

    def _resume_position(self, f: VolumeFile) -> int:
        """Where the copy resumes (blocking): the temp file's size when the sidecar says it
        is a copy of this source, else 0. Sets self.revision from the sidecar."""
        sidecar = pull_sidecar_name(self.vid)
        if not self.storage.exists(sidecar):
            return 0
        try:
            doc = json.loads(read_file(self.storage, sidecar))
            same = (
                doc.get("version") == SIDECAR_FORMAT_VERSION
                and doc.get("volume_id") == self.vid
                and doc.get("source") == self.source
                and isinstance(doc.get("compaction_revision"), int)
            )
        except ValueError:
            same = False
        if not same:
            return 0
        self.revision = int(doc["compaction_revision"])
        return f.size()

    def _start_over(self, f: VolumeFile, revision: int | None) -> None:
        """Empties the temp file and records what it will be a copy of (blocking)."""
        f.truncate(0)
        f.datasync()
        self.revision = revision
        if revision is None:
            if self.storage.exists(pull_sidecar_name(self.vid)):
                self.storage.remove(pull_sidecar_name(self.vid))
                self.storage.sync_dir()
            return
        doc = {
            "version": SIDECAR_FORMAT_VERSION,
            "volume_id": self.vid,
            "source": self.source,
            "compaction_revision": revision,
        }
        write_file_atomic(
            self.storage, pull_sidecar_name(self.vid), [json.dumps(doc, sort_keys=True).encode()]
        )

    def _check(self, f: VolumeFile) -> None:
        """Every needle of the copy, checked (blocking). A broken copy is discarded."""
        try:
            sb = superblock.decode(f.read(SUPERBLOCK_BYTES, 0))
            if sb.volume_id != self.vid:
                raise FormatError(f"the source's file holds volume {sb.volume_id}")
            if sb.compaction_revision != self.revision:
                raise FormatError("the copy's superblock is of another compaction revision")
            for item in scan(f, SUPERBLOCK_BYTES, f.size()):
                if isinstance(item, Damage):
                    if item.broken:
                        raise FormatError(f"offset {item.offset}: {item.message}")
                    self.corrupt_needles += 1
                    log.error(
                        "v%d: the pulled copy holds a corrupt needle at offset %d: %s",
                        self.vid,
                        item.offset,
                        item.message,
                    )
                else:
                    self.needles += 1
        except FormatError as e:
            f.truncate(0)
            f.datasync()
            if self.storage.exists(pull_sidecar_name(self.vid)):
                self.storage.remove(pull_sidecar_name(self.vid))
                self.storage.sync_dir()
            raise PullFailed(f"volume {self.vid}: the copy is broken, discarded: {e}") from e

    def install(self, limits: VolumeLimits) -> Volume:
        """Makes the checked copy the volume and opens it (blocking; under the node's admin
        lock, after copy())."""
        storage, vid = self.storage, self.vid
        if storage.exists(data_name(vid)):
            raise VolumeExists(f"volume {vid} exists")
        # Side files of an earlier volume with this id must not attach to the copy.
        stale = [n for n in (index_name(vid), state_name(vid)) if storage.exists(n)]
        for n in stale:
            storage.remove(n)
        storage.rename(pull_data_name(vid), data_name(vid))
        storage.sync_dir()
        storage.remove(pull_sidecar_name(vid))
        storage.sync_dir()
        return open_volume(storage, vid, limits)

    def report(self) -> PullReport:
        return PullReport(
            volume_id=self.vid,
            source=self.source,
            compaction_revision=self.revision if self.revision is not None else -1,
            bytes_total=self.volume_end,
            bytes_copied=self.bytes_copied,
            resumed_from=self.resumed_from,
            restarts=self.restarts,
            needles=self.needles,
            corrupt_needles=self.corrupt_needles,
            elapsed_s=time.monotonic() - self._t0,
        )
