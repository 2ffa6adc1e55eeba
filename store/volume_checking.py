"""verify: read every needle of a volume and check magic and checksum, and check that every
entry of the needle map points at the needle it names.

The scan and the map (sorted by offset) are walked in step, so the check costs one
sequential read of the file and no per-needle memory.

`ok` means: no needle the map points at is damaged, no map entry is wrong, and the framing
holds through the whole file. Corrupt needles that nothing points at (garbage left by a power
cut, or bit rot in deleted data) are counted in `corrupt_dead` but do not fail the check:
compaction drops them.

A scrub is a verify with a rate-limited `Throttle` (common/jobs/local.py: the read rate is
held under it by sleeping on the worker thread, and a cancel of the job is seen there between
needles) whose report lists the (key, alt_key) of the corrupt live needles, so that
each can be repaired from another replica. The list holds at most CORRUPT_NEEDLES_LISTED_MAX
pairs; the counts are always complete. Needles past a point where the framing breaks
(`broken_at`) are counted in corrupt_live but not listed: the scan cannot tell whether they
are damaged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from common.jobs.local import Throttle
from store.needle_run import TOMBSTONE_OFFSET
from store.needle_scan import SCAN_CHUNK_BYTES, Damage, scan
from store.superblock import SUPERBLOCK_BYTES
from store.volume import UNIT, Volume

# Offsets listed in a report at most (the counts are always complete).
REPORT_OFFSETS_MAX: Final = 100
# (key, alt_key) pairs of corrupt live needles listed in a report at most.
CORRUPT_NEEDLES_LISTED_MAX: Final = 1000
# A throttled scan reads in chunks of about a quarter second of its rate, within these.
THROTTLED_CHUNK_BYTES_MIN: Final = 64 * 1024

Progress = Callable[[int, int], None]  # (bytes checked, bytes total)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    volume_id: int
    ok: bool
    bytes_checked: int
    needles: int
    tombstones: int
    flagged_deleted: int
    live_checked: int
    corrupt_live: int
    corrupt_dead: int
    map_mismatches: int
    broken_at: int | None
    elapsed_s: float
    problems: list[str] = field(default_factory=list)
    corrupt_needles: list[tuple[int, int]] = field(default_factory=list)


def verify(
    volume: Volume,
    *,
    progress: Progress | None = None,
    throttle: Throttle | None = None,
) -> VerifyReport:
    """Checks the volume (blocking: run it on a worker thread). With a `throttle`, reads at
    most its rate and raises LocalJobCancelled between needles once its job is cancelled."""
    t0 = time.monotonic()
    if throttle is None:
        throttle = Throttle()
    rate = throttle.bytes_per_s
    chunk_bytes = SCAN_CHUNK_BYTES
    if rate is not None:
        quarter_s = int(rate / 4)
        chunk_bytes = min(SCAN_CHUNK_BYTES, max(THROTTLED_CHUNK_BYTES_MIN, quarter_s))
    gen = volume.pin_generation()
    try:
        end = volume.end
        snap = gen.map.snapshot()
        keys, alts, offsets, lengths = snap.expanded()
        live = np.flatnonzero((offsets != TOMBSTONE_OFFSET) & (offsets < end // UNIT))
        order = live[np.argsort(offsets[live], kind="stable")]
        want_off = offsets[order].tolist()
        want = list(
            zip(keys[order].tolist(), alts[order].tolist(), lengths[order].tolist(), strict=True)
        )
        del keys, alts, offsets, lengths, snap
        problems: list[str] = []
        corrupt_needles: list[tuple[int, int]] = []
        needles = tombstones = flagged = checked = 0
        corrupt_live = corrupt_dead = mismatches = 0
        broken_at: int | None = None
        i = 0
        n = len(want_off)
        last_report = 0

        def note(msg: str) -> None:
            if len(problems) < REPORT_OFFSETS_MAX:
                problems.append(msg)

        pos = waited_to = SUPERBLOCK_BYTES
        for item in scan(gen.file, SUPERBLOCK_BYTES, end, chunk_bytes=chunk_bytes):
            unit = item.offset // UNIT
            while i < n and want_off[i] < unit:
                mismatches += 1
                note(f"map entry at offset {want_off[i] * UNIT} points between needles")
                i += 1
            pointed = i < n and want_off[i] == unit
            if isinstance(item, Damage):
                if pointed:
                    corrupt_live += 1
                    if len(corrupt_needles) < CORRUPT_NEEDLES_LISTED_MAX:
                        corrupt_needles.append((want[i][0], want[i][1]))
                    i += 1
                else:
                    corrupt_dead += 1
                note(f"offset {item.offset}: {item.message}")
                if item.broken:
                    broken_at = item.offset
                    break
                pos = item.offset + item.length
                continue
            needles += 1
            h = item.header
            pos = item.offset + item.length
            if h.tombstone:
                tombstones += 1
            if h.deleted:
                flagged += 1
            if pointed:
                key, alt, length_units = want[i]
                i += 1
                if (h.key, h.alt_key, item.length // UNIT) != (key, alt, length_units):
                    mismatches += 1
                    note(
                        f"offset {item.offset}: map says ({key}, {alt}),"
                        f" the needle is ({h.key}, {h.alt_key})"
                    )
                elif h.tombstone or h.deleted:
                    mismatches += 1
                    note(f"offset {item.offset}: map points at a deleted needle")
                else:
                    checked += 1
            if progress is not None and pos - last_report >= 64 * 1024 * 1024:
                progress(pos, end)
                last_report = pos
            throttle.wait(pos - waited_to)
            waited_to = pos
        if broken_at is not None:
            corrupt_live += n - i
        else:
            mismatches += n - i
        if progress is not None:
            progress(end, end)
    finally:
        gen.unpin()
    ok = corrupt_live == 0 and mismatches == 0 and broken_at is None
    return VerifyReport(
        volume_id=volume.id,
        ok=ok,
        bytes_checked=pos,
        needles=needles,
        tombstones=tombstones,
        flagged_deleted=flagged,
        live_checked=checked,
        corrupt_live=corrupt_live,
        corrupt_dead=corrupt_dead,
        map_mismatches=mismatches,
        broken_at=broken_at,
        elapsed_s=time.monotonic() - t0,
        problems=problems,
        corrupt_needles=corrupt_needles,
    )
