"""Online compaction: rewrite a volume without its deleted and overwritten needles while
reads and writes go on.

1. Snapshot: note the durable end W0 and take a snapshot of the map. Every live needle below
   W0 is copied, in file order, into `v<id>.cpd` (a new superblock with the compaction
   revision + 1), each one verified on the way (a corrupt needle stops the compaction: it
   must be repaired from a replica, not silently dropped or carried over), paced by the
   compaction's `Throttle` (common/jobs/local.py), where a cancel of its job is also seen.
   The new map is the snapshot with the new offsets.
2. Catch up: needles appended meanwhile (writes and tombstones) are replayed into the new
   file and map, round after round, until the tail left is small.
3. Switch, on the volume's writer thread so no write interleaves: replay the last tail, sync
   the new file, write its index as `v<id>.cpx`, write the commit marker `v<id>.cpm`, rename
   .cpd -> .dat and .cpx -> .idx, sync the directory, remove the marker. Then swap the
   in-memory generation; readers of the old file finish on it before it closes.

A crash before the marker is durable rolls back (temp files removed on open); after, it
rolls forward (the renames are finished on open). See store/volume_loading.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from common.jobs.local import LocalJobCancelled, Throttle
from store import index_file, needle
from store.errors import CorruptNeedle, NodeBusy, VolumeNotWritable
from store.needle_map import NeedleMap
from store.needle_run import Run
from store.needle_scan import Damage, scan
from store.storage import VolumeFile
from store.superblock import SUPERBLOCK_BYTES
from store.volume import (
    UNIT,
    Generation,
    Volume,
    compact_data_name,
    compact_index_name,
    compact_marker_name,
    data_name,
    index_name,
)
from store.volume_loading import write_marker
from store.volume_state import Reason, read_only

log = logging.getLogger("pinhole.store")

COPY_CHUNK_BYTES_MAX: Final = 4 * 1024 * 1024
# Switch once the tail written during a catch-up round is below this (the switch holds the
# writer while it replays the last tail).
SWITCH_TAIL_BYTES_MAX: Final = 4 * 1024 * 1024
CATCH_UP_ROUNDS_MAX: Final = 16


@dataclass(frozen=True, slots=True)
class CompactionReport:
    volume_id: int
    phase: str  # copying | catching_up | switching | done | failed | cancelled
    bytes_total: int  # live bytes to copy in phase 1
    bytes_copied: int
    needles_copied: int
    tail_bytes_replayed: int
    size_before: int
    size_after: int
    started_unix_s: float
    elapsed_s: float
    error: str | None


Progress = Callable[[int, int], None]  # (bytes copied, bytes to copy)


class Compaction:
    """One compaction of `volume`: run() on a worker thread. `throttle` paces the copy and
    carries the cancel (LocalJobCancelled rolls the compaction back)."""

    def __init__(
        self,
        volume: Volume,
        *,
        throttle: Throttle | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.volume = volume
        self._throttle = throttle if throttle is not None else Throttle()
        self._progress = progress
        self.phase = "copying"
        self.bytes_total = 0
        self.bytes_copied = 0
        self.needles_copied = 0
        self.tail_bytes_replayed = 0
        self.size_before = volume.end
        self.size_after = 0
        self.started = time.time()
        self._t0 = time.monotonic()
        self.error: str | None = None
        self.done = False
        # Hook for crash tests: called with a step name before each step of the switch.
        self.before_step: Callable[[str], None] = lambda step: None

    def report(self) -> CompactionReport:
        return CompactionReport(
            volume_id=self.volume.id,
            phase=self.phase,
            bytes_total=self.bytes_total,
            bytes_copied=self.bytes_copied,
            needles_copied=self.needles_copied,
            tail_bytes_replayed=self.tail_bytes_replayed,
            size_before=self.size_before,
            size_after=self.size_after,
            started_unix_s=self.started,
            elapsed_s=time.monotonic() - self._t0,
            error=self.error,
        )

    # -- driver ------------------------------------------------------------------------------

    def run(self) -> CompactionReport:
        """Compacts the volume (blocking: run it on a worker thread)."""
        vol = self.volume
        current = vol.compaction
        if current is not None and not current.done:
            raise NodeBusy(f"volume {vol.id} is already being compacted")
        if vol.state.reason is Reason.IO_ERROR:
            raise VolumeNotWritable(f"volume {vol.id} is read-only after an I/O error")
        vol.compaction = self
        storage = vol.storage
        new_file: VolumeFile | None = None
        switched = False
        try:
            new_file = storage.open(compact_data_name(vol.id), create=True)
            new_file.truncate(0)
            new_map, replayed_to, new_end = self._copy_snapshot(new_file)
            self.phase = "catching_up"
            for _ in range(CATCH_UP_ROUNDS_MAX):
                target = vol.end
                if target - replayed_to <= SWITCH_TAIL_BYTES_MAX:
                    break
                new_end = self._replay(new_file, new_map, replayed_to, target, new_end)
                replayed_to = target
            self.phase = "switching"
            final_end = vol.writer.submit_call(
                lambda: self._switch(new_file, new_map, replayed_to, new_end)
            ).result()
            switched = True
            self.size_after = final_end
            self.phase = "done"
            vol.compactions += 1
            log.info(
                "v%d: compacted %d -> %d bytes in %.1f s",
                vol.id,
                self.size_before,
                final_end,
                time.monotonic() - self._t0,
            )
        except BaseException as e:
            self.phase = "cancelled" if isinstance(e, LocalJobCancelled) else "failed"
            self.error = f"{e.__class__.__name__}: {e}"
            if not switched:
                self._roll_back(new_file)
            raise
        finally:
            self.done = True
        return self.report()

    def _roll_back(self, new_file: VolumeFile | None) -> None:
        vol = self.volume
        if new_file is not None:
            new_file.close()
        storage = vol.storage
        if storage.exists(compact_marker_name(vol.id)):
            return  # past the commit point: the next open rolls forward
        for name in (compact_data_name(vol.id), compact_index_name(vol.id)):
            if storage.exists(name):
                storage.remove(name)
        storage.sync_dir()

    # -- phase 1: copy the snapshot ---------------------------------------------------------

    def _copy_snapshot(self, new_file: VolumeFile) -> tuple[NeedleMap, int, int]:
        vol = self.volume
        gen = vol.pin_generation()
        try:
            w0 = vol.end
            snap = gen.map.snapshot()
            sb = gen.superblock.next_revision()
            new_file.write([sb.encode()], 0)
            keys, alts, offsets, lengths = snap.expanded()
            below = offsets < (w0 // UNIT)
            # Entries at or past W0 are copied by the replay of the tail.
            keep = np.flatnonzero(below)
            order = keep[np.argsort(offsets[keep], kind="stable")]
            lens_sorted = lengths[order].astype(np.uint64)
            new_offsets_sorted = (SUPERBLOCK_BYTES // UNIT) + np.cumsum(lens_sorted) - lens_sorted
            self.bytes_total = int(lens_sorted.sum()) * UNIT
            self._copy_in_order(
                gen,
                new_file,
                keys[order],
                alts[order],
                offsets[order].astype(np.uint64),
                lens_sorted,
                new_offsets_sorted,
            )
            new_offsets = np.zeros(len(offsets), np.uint32)
            new_offsets[order] = new_offsets_sorted.astype(np.uint32)
            keep_mask = below
            new_run = _run_subset(snap, keep_mask, new_offsets)
            new_end = SUPERBLOCK_BYTES + self.bytes_total
        finally:
            gen.unpin()
        new_map = NeedleMap.from_run(new_run, memtable_entries_max=vol.limits.memtable_entries_max)
        return new_map, w0, new_end

    def _copy_in_order(
        self,
        gen: Generation,
        new_file: VolumeFile,
        keys: np.ndarray,
        alts: np.ndarray,
        old_units: np.ndarray,
        len_units: np.ndarray,
        new_units: np.ndarray,
    ) -> None:
        n = len(keys)
        i = 0
        while i < n:
            self._throttle.check()
            # A chunk: needles contiguous in the old file, up to COPY_CHUNK_BYTES_MAX.
            j = i + 1
            chunk_units = int(len_units[i])
            while (
                j < n
                and old_units[j] == old_units[j - 1] + len_units[j - 1]
                and (chunk_units + int(len_units[j])) * UNIT <= COPY_CHUNK_BYTES_MAX
            ):
                chunk_units += int(len_units[j])
                j += 1
            start = int(old_units[i]) * UNIT
            buf = gen.file.read(chunk_units * UNIT, start)
            view = memoryview(buf)
            rel = 0
            for k in range(i, j):
                length = int(len_units[k]) * UNIT
                raw = view[rel : rel + length]
                h = needle.verify(raw, offset=start + rel)
                if (h.key, h.alt_key, h.length) != (int(keys[k]), int(alts[k]), length):
                    raise CorruptNeedle("index and file disagree", offset=start + rel)
                rel += length
            new_file.write([view], int(new_units[i]) * UNIT)
            self.bytes_copied += chunk_units * UNIT
            self.needles_copied += j - i
            if self._progress is not None:
                self._progress(self.bytes_copied, self.bytes_total)
            self._throttle.wait(chunk_units * UNIT)
            i = j

    # -- phase 2 and the switch: replay what was appended meanwhile --------------------------

    def _replay(
        self,
        new_file: VolumeFile,
        new_map: NeedleMap,
        start: int,
        stop: int,
        new_end: int,
        *,
        paced: bool = True,
    ) -> int:
        """Copies the needles in [start, stop) of the old file to the end of the new one and
        applies them to the new map. Returns the new end. Unpaced (the switch holds the
        writer) it only looks for a cancel."""
        gen = self.volume.pin_generation()
        try:
            for item in scan(gen.file, start, stop):
                self._throttle.check()
                if isinstance(item, Damage):
                    raise CorruptNeedle(f"while replaying: {item.message}", offset=item.offset)
                h = item.header
                new_file.write([item.raw], new_end)
                if h.tombstone:
                    prev = new_map.get(h.key, h.alt_key)
                    if prev is not None:
                        new_map.delete(h.key, h.alt_key)
                        new_file.write(
                            [bytes([needle.FLAG_DELETED])], prev[0] * UNIT + needle.FLAGS_OFFSET
                        )
                elif not h.deleted:
                    new_map.put(h.key, h.alt_key, new_end // UNIT, item.length // UNIT)
                new_end += item.length
                self.tail_bytes_replayed += item.length
                if paced:
                    self._throttle.wait(item.length)
        finally:
            gen.unpin()
        return new_end

    def _switch(
        self, new_file: VolumeFile, new_map: NeedleMap, replayed_to: int, new_end: int
    ) -> int:
        """Runs on the writer thread: no write can interleave."""
        vol = self.volume
        storage = vol.storage
        new_end = self._replay(new_file, new_map, replayed_to, vol.end, new_end, paced=False)
        self.before_step("sync_data")
        new_file.datasync()
        self.before_step("write_index")
        old_gen = vol.generation
        sb = old_gen.superblock.next_revision()
        run = new_map.snapshot()
        index_file.write(
            storage,
            compact_index_name(vol.id),
            index_file.IndexCheckpoint(
                volume_id=vol.id,
                compaction_revision=sb.compaction_revision,
                covered_bytes=new_end,
                run=run,
            ),
        )
        with vol._checkpoint_lock:  # no background checkpoint may write the old index now
            self.before_step("write_marker")
            write_marker(storage, vol.id, sb.compaction_revision, new_end)
            try:
                self.before_step("rename_data")
                storage.rename(compact_data_name(vol.id), data_name(vol.id))
                self.before_step("rename_index")
                storage.rename(compact_index_name(vol.id), index_name(vol.id))
                self.before_step("sync_dir")
                storage.sync_dir()
                self.before_step("remove_marker")
                storage.remove(compact_marker_name(vol.id))
                storage.sync_dir()
            except BaseException as e:
                # Past the commit point: the files roll forward when the volume reopens, but
                # this process can no longer trust its view of them.
                failed = read_only(Reason.IO_ERROR, f"compaction switch failed: {e}")
                vol.set_state(failed, persist=False)
                raise
            new_gen = Generation(
                new_file,
                NeedleMap.from_run(run, memtable_entries_max=vol.limits.memtable_entries_max),
                sb,
            )
            del new_map
            # The generation first, then the end: a checkpoint that read the old generation
            # notices the swap before it could pair the old map with the new end.
            vol._gen = new_gen
            vol.end = new_end
            vol.index_covered_bytes = new_end
            vol.index_bytes = run.nbytes
        old_gen.retire()
        return new_end


def _run_subset(snap: Run, keep: np.ndarray, new_offsets: np.ndarray) -> Run:
    from store.needle_run import run_from_sorted

    keys, alts, _, lengths = snap.expanded()
    return run_from_sorted(keys[keep], alts[keep], new_offsets[keep], lengths[keep])


def compact(volume: Volume, *, throttle: Throttle | None = None) -> CompactionReport:
    """Compacts `volume` now (blocking)."""
    return Compaction(volume, throttle=throttle).run()
