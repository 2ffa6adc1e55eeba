"""Creating and opening volumes, and every recovery step an open performs.

Open, in order:
1. Finish or undo an interrupted compaction (its commit marker decides: roll forward when
   the marker exists, roll back otherwise). Stale temp files from atomic writes go.
2. Read and check the superblock.
3. Load the index checkpoint if it is sound (checksums, volume id, compaction revision, and
   the last needle it points at really is that needle); otherwise start from an empty map.
4. Scan the needles past the checkpoint, verify each and index it. A corrupt needle whose
   framing holds is skipped; where the framing breaks (a torn write) the file is cut.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Final

import numpy as np

from store import index_file, needle, superblock, volume_state
from store.errors import CorruptNeedle, FormatError, VolumeExists, VolumeNotOnNode
from store.needle_map import NeedleMap
from store.needle_run import TOMBSTONE_OFFSET, Run
from store.needle_scan import Damage, scan
from store.storage import Storage, VolumeFile, read_file
from store.superblock import SUPERBLOCK_BYTES, Superblock
from store.volume import (
    UNIT,
    Generation,
    Volume,
    compact_data_name,
    compact_index_name,
    compact_marker_name,
    data_name,
    index_name,
    state_name,
)
from store.volume_config import VolumeLimits
from store.volume_state import Mode, Reason, read_only

log = logging.getLogger("pinhole.store")

MARKER_FORMAT_VERSION: Final = 1
# How many of the checkpoint's highest-offset needles are checked against the file on open.
CHECKPOINT_SPOT_CHECKS: Final = 8


def create_volume(storage: Storage, vid: int, limits: VolumeLimits) -> Volume:
    """Creates an empty volume durably: the data file appears whole or not at all."""
    name = data_name(vid)
    if storage.exists(name):
        raise VolumeExists(f"volume {vid} exists")
    # An index or state left by an earlier volume of this id (a delete cut short by a
    # crash) must not attach to the new one.
    for stale in (index_name(vid), state_name(vid)):
        if storage.exists(stale):
            storage.remove(stale)
    sb = Superblock.new(vid, limits.size_bytes_max)
    tmp = name + ".tmp"
    f = storage.open(tmp, create=True)
    try:
        f.truncate(0)
        f.write([sb.encode()], 0)
        f.datasync()
    finally:
        f.close()
    storage.rename(tmp, name)
    storage.sync_dir()
    return open_volume(storage, vid, limits)


def remove_volume_files(storage: Storage, vid: int) -> None:
    """Removes every file of a closed volume (blocking). The compaction marker goes first
    and the data file next, so a crash part way leaves either the whole volume or no data
    file (no roll-forward could bring a compacted copy back); side files left by such a
    crash are removed by the next create_volume of the id."""
    names = [compact_marker_name(vid), data_name(vid)]
    names += [index_name(vid), state_name(vid), compact_data_name(vid), compact_index_name(vid)]
    for name in list(names):
        names.append(name + ".tmp")
    for name in names:
        if storage.exists(name):
            storage.remove(name)
            if name in (compact_marker_name(vid), data_name(vid)):
                storage.sync_dir()
    storage.sync_dir()


def volume_ids(storage: Storage) -> list[int]:
    """Ids of the volumes in a directory (by their data files or pending compactions)."""
    ids = set()
    for name in storage.list():
        stem, dot, ext = name.partition(".")
        if dot and ext in ("dat", "cpm") and stem.startswith("v") and stem[1:].isdigit():
            ids.add(int(stem[1:]))
    return sorted(ids)


def recover_compaction(storage: Storage, vid: int) -> str | None:
    """Rolls an interrupted compaction forward (marker present) or back (no marker).
    Returns "forward", "back" or None when there was nothing to do."""
    marker = compact_marker_name(vid)
    cpd, cpx = compact_data_name(vid), compact_index_name(vid)
    if storage.exists(marker):
        doc = _read_marker(storage, marker, vid)
        if storage.exists(cpd):
            storage.rename(cpd, data_name(vid))
        if storage.exists(cpx):
            storage.rename(cpx, index_name(vid))
        storage.sync_dir()
        f = storage.open(data_name(vid))
        try:
            sb = superblock.decode(f.read(SUPERBLOCK_BYTES, 0))
        finally:
            f.close()
        if sb.compaction_revision != doc["compaction_revision"]:
            raise FormatError(
                f"volume {vid}: compaction marker names revision {doc['compaction_revision']}"
                f" but the data file has {sb.compaction_revision}"
            )
        storage.remove(marker)
        storage.sync_dir()
        log.info("v%d: rolled an interrupted compaction forward", vid)
        return "forward"
    leftovers = [n for n in (cpd, cpx, cpd + ".tmp", cpx + ".tmp") if storage.exists(n)]
    for n in leftovers:
        storage.remove(n)
    if leftovers:
        storage.sync_dir()
        log.info("v%d: rolled an interrupted compaction back", vid)
        return "back"
    return None


def write_marker(storage: Storage, vid: int, revision: int, data_bytes: int) -> None:
    from store.storage import write_file_atomic

    doc = {
        "version": MARKER_FORMAT_VERSION,
        "volume_id": vid,
        "compaction_revision": revision,
        "data_bytes": data_bytes,
    }
    write_file_atomic(storage, compact_marker_name(vid), [json.dumps(doc).encode()])


def _read_marker(storage: Storage, name: str, vid: int) -> dict[str, int]:
    try:
        doc = json.loads(read_file(storage, name))
    except ValueError as e:
        raise FormatError(f"volume {vid}: unreadable compaction marker: {e}") from e
    if doc.get("version") != MARKER_FORMAT_VERSION or doc.get("volume_id") != vid:
        raise FormatError(f"volume {vid}: compaction marker does not match")
    return {k: int(v) for k, v in doc.items()}


def open_volume(storage: Storage, vid: int, limits: VolumeLimits) -> Volume:
    recover_compaction(storage, vid)
    for stale in (data_name(vid), index_name(vid), state_name(vid), compact_marker_name(vid)):
        if storage.exists(stale + ".tmp"):
            storage.remove(stale + ".tmp")
    if not storage.exists(data_name(vid)):
        raise VolumeNotOnNode(f"volume {vid} does not exist")
    f = storage.open(data_name(vid))
    try:
        return _open(storage, vid, limits, f)
    except BaseException:
        f.close()
        raise


def _open(storage: Storage, vid: int, limits: VolumeLimits, f: VolumeFile) -> Volume:
    size = f.size()
    sb = superblock.decode(f.read(SUPERBLOCK_BYTES, 0))
    if sb.volume_id != vid:
        raise FormatError(f"{data_name(vid)} holds volume {sb.volume_id}")
    limits = replace(limits, size_bytes_max=sb.size_bytes_max)
    state = volume_state.load(storage, state_name(vid))

    run, covered, index_bytes = _load_checkpoint(storage, vid, sb, f, size)
    nmap = NeedleMap.from_run(run, memtable_entries_max=limits.memtable_entries_max)
    live = run.offsets != TOMBSTONE_OFFSET
    needles_live = int(np.count_nonzero(live))
    bytes_live = run.live_length_units() * UNIT

    end = covered
    scanned = corrupt = 0
    torn = 0
    for item in scan(f, covered, size):
        if isinstance(item, Damage):
            if item.broken:
                torn = size - item.offset
                log.warning(
                    "v%d: cutting %d bytes of torn tail at offset %d (%s)",
                    vid,
                    torn,
                    item.offset,
                    item.message,
                )
                f.truncate(item.offset)
                f.datasync()
                break
            corrupt += 1
            log.error(
                "v%d: skipping corrupt needle at offset %d: %s", vid, item.offset, item.message
            )
            end = item.offset + item.length
            continue
        scanned += 1
        h = item.header
        end = item.offset + item.length
        prev = nmap.get(h.key, h.alt_key)
        if h.tombstone or h.deleted:
            if prev is not None:
                nmap.delete(h.key, h.alt_key)
                needles_live -= 1
                bytes_live -= prev[1] * UNIT
            continue
        if prev is None:
            needles_live += 1
        else:
            bytes_live -= prev[1] * UNIT
        nmap.put(h.key, h.alt_key, item.offset // UNIT, item.length // UNIT)
        bytes_live += item.length

    gen = Generation(f, nmap, sb)
    vol = Volume(
        storage=storage,
        vid=vid,
        limits=limits,
        generation=gen,
        end=end,
        state=state,
        needles_live=needles_live,
        bytes_live=bytes_live,
        index_covered_bytes=covered,
        index_bytes=index_bytes,
    )
    vol.opened_scan_needles = scanned
    vol.opened_torn_bytes = torn
    vol.opened_corrupt_needles = corrupt
    if state.mode is Mode.WRITABLE and vol.is_full():
        vol.set_state(read_only(Reason.FULL, "size limit reached"))
    if vol.checkpoint_due():
        vol.checkpoint_in_background()
    return vol


def _load_checkpoint(
    storage: Storage, vid: int, sb: Superblock, f: VolumeFile, size: int
) -> tuple[Run, int, int]:
    """(run, covered_bytes, index bytes) from a sound checkpoint, or an empty start."""
    from store.needle_run import empty_run

    name = index_name(vid)
    empty = (empty_run(), SUPERBLOCK_BYTES, 0)
    if not storage.exists(name):
        return empty
    try:
        cp = index_file.load(storage, name)
        if cp.volume_id != vid:
            raise FormatError(f"index names volume {cp.volume_id}")
        if cp.compaction_revision != sb.compaction_revision:
            raise FormatError(
                f"index is of compaction revision {cp.compaction_revision},"
                f" the data file of {sb.compaction_revision}"
            )
        if not SUPERBLOCK_BYTES <= cp.covered_bytes <= size or cp.covered_bytes % UNIT:
            raise FormatError(f"index covers {cp.covered_bytes} bytes of a {size}-byte file")
        _spot_check(cp.run, f, cp.covered_bytes)
    except (FormatError, CorruptNeedle, OSError) as e:
        log.warning("v%d: ignoring index checkpoint (%s); scanning the whole volume", vid, e)
        return empty
    return cp.run, cp.covered_bytes, cp.run.nbytes


def _spot_check(run: Run, f: VolumeFile, covered: int) -> None:
    """The checkpoint's last needles must be where it says, as it says."""
    offsets = run.offsets
    live = np.flatnonzero(offsets != TOMBSTONE_OFFSET)
    if not len(live):
        return
    top = live[np.argsort(offsets[live])[-CHECKPOINT_SPOT_CHECKS:]]
    for i in top.tolist():
        key = int(run.keys[int(np.searchsorted(run.starts, i, side="right")) - 1])
        alt = run.alt_at(i)
        offset = int(offsets[i]) * UNIT
        length = (int(run.len_lo[i]) | (int(run.len_hi[i]) << 16)) * UNIT
        if offset + length > covered:
            raise FormatError("index points past the bytes it covers")
        h = needle.parse_header(f.read(needle.HEADER_BYTES, offset), offset=offset)
        if (h.key, h.alt_key, h.length) != (key, alt, length):
            raise FormatError(f"index entry at offset {offset} does not match the needle there")
