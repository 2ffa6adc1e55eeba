"""Index files (`v<id>.idx`): a checkpoint of a volume's needle map.

The map covers every needle that starts below `covered_bytes` in the volume file; needles
past it are scanned, verified and indexed when the volume opens. The checkpoint is only ever
taken of durable, applied state, and replaced atomically (temp file, sync, rename, sync dir),
so a crash leaves the previous checkpoint or the new one, never a mix.

Header (64 bytes, little-endian):

    0          8        10        12         16         18        19         21       24
    +----------+--------+---------+----------+----------+---------+----------+--------+
    |  magic   |version |reserved |volume_id |compaction|alt_bytes|alt_table |reserved|
    |"PNHLIDX1"|  u16   |  2 x 0  |   u32    |revision  |   u8    |  count   | 3 x 0  |
    |          | (1, 2) |         |          |   u16    |(1,2,4)  |u16 (v2)  |        |
    +----------+--------+---------+----------+----------+---------+----------+--------+
    24              32          40            48               56          64
    +---------------+-----------+-------------+----------------+-----------+
    | covered_bytes | key_count | entry_count | body_checksum  | header    |
    |     u64       |   u64     |    u64      | xxh3_64(body)  | checksum  |
    +---------------+-----------+-------------+----------------+-----------+

Body: the arrays of one merged run (store/needle_run.py) in this order, each starting at a
multiple of 8 bytes from the start of the body (zero padding in between), so that they
are used in place, aligned, without copies:
keys u64[K], starts u32[K+1], alts u8|u16|u32[N], offsets u32[N], len_lo u16[N], len_hi u8[N],
and in version 2 the run's alt table u32[T] (the alts are then u8 codes into it;
store/needle_run.py). A file of a run without a table is written as version 1, whose
alt_table count is 0: version 1 files read as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import xxhash

from store.errors import FormatError
from store.needle_run import ALT_TABLE_MAX, Run
from store.storage import Storage, read_file, write_file_atomic

MAGIC: Final = b"PNHLIDX1"
FORMAT_VERSION: Final = 2  # version 1: no alt table (still read, and written for such runs)
HEADER_BYTES: Final = 64
ARRAY_ALIGNMENT_BYTES: Final = 8

_HEADER = struct.Struct("<8sH2xIHBH3xQQQQ")
_CHECKSUM = struct.Struct("<Q")
assert _HEADER.size + _CHECKSUM.size == HEADER_BYTES


@dataclass(frozen=True, slots=True)
class IndexCheckpoint:
    volume_id: int
    compaction_revision: int
    covered_bytes: int
    run: Run


def encode(checkpoint: IndexCheckpoint) -> list[bytes | memoryview]:
    """Header and body buffers (the body arrays are not copied)."""
    run = checkpoint.run
    arrays = [run.keys, run.starts, run.alts, run.offsets, run.len_lo, run.len_hi]
    table = run.alt_table
    if table is not None:
        arrays.append(table)
    body: list[bytes | memoryview] = []
    for a in arrays:
        part = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data
        body.append(part)
        body.append(bytes(_padding(part.nbytes)))
    hasher = xxhash.xxh3_64()
    for piece in body:
        hasher.update(piece)
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION if table is not None else 1,
        checkpoint.volume_id,
        checkpoint.compaction_revision,
        run.alts.dtype.itemsize,
        len(table) if table is not None else 0,
        checkpoint.covered_bytes,
        len(run.keys),
        len(run),
        hasher.intdigest(),
    )
    return [header + _CHECKSUM.pack(xxhash.xxh3_64_intdigest(header)), *body]


def decode(buf: bytes) -> IndexCheckpoint:
    """Parses and checks an index file; raises FormatError. The run's arrays are read-only
    views into `buf`."""
    if len(buf) < HEADER_BYTES:
        raise FormatError("index file too short")
    head = buf[: _HEADER.size]
    (stored,) = _CHECKSUM.unpack_from(buf, _HEADER.size)
    if head[:8] != MAGIC:
        raise FormatError("not a pinhole index (bad magic)")
    if stored != xxhash.xxh3_64_intdigest(head):
        raise FormatError("index header checksum mismatch")
    (_, version, vid, revision, alt_bytes, table_count, covered, key_count, entry_count,
     body_sum) = _HEADER.unpack(head)  # fmt: skip
    if version not in (1, FORMAT_VERSION):
        raise FormatError(f"index format version {version} is not supported")
    if (version == 1 and table_count) or (
        version == 2 and not (0 < table_count <= ALT_TABLE_MAX and alt_bytes == 1)
    ):
        raise FormatError(f"bad alt table of {table_count} keys for version {version}")
    alt_dtypes: dict[int, np.dtype] = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4")}
    alt_dtype = alt_dtypes.get(alt_bytes)
    if alt_dtype is None:
        raise FormatError(f"bad alt key width {alt_bytes}")
    layout: list[tuple[np.dtype, int]] = [
        (np.dtype("<u8"), key_count),
        (np.dtype("<u4"), key_count + 1),
        (alt_dtype, entry_count),
        (np.dtype("<u4"), entry_count),
        (np.dtype("<u2"), entry_count),
        (np.dtype("<u1"), entry_count),
    ]
    if table_count:
        layout.append((np.dtype("<u4"), table_count))
    body_bytes = sum(dt.itemsize * n + _padding(dt.itemsize * n) for dt, n in layout)
    if len(buf) != HEADER_BYTES + body_bytes:
        raise FormatError("index file length does not match its header")
    view = memoryview(buf)[HEADER_BYTES:]
    if xxhash.xxh3_64_intdigest(view) != body_sum:
        raise FormatError("index body checksum mismatch")
    arrays = []
    pos = 0
    for dt, n in layout:
        arrays.append(np.frombuffer(view, dtype=dt, count=n, offset=pos))
        pos += dt.itemsize * n + _padding(dt.itemsize * n)
    keys, starts, alts, offsets, len_lo, len_hi = arrays[:6]
    table = arrays[6] if table_count else None
    if entry_count and (int(starts[0]) != 0 or int(starts[-1]) != entry_count):
        raise FormatError("index key groups do not cover the entries")
    if table is not None and entry_count and int(alts.max()) >= table_count:
        raise FormatError("an alt code past the alt table")
    run = Run(
        keys=keys,
        starts=starts,
        alts=alts,
        offsets=offsets,
        len_lo=len_lo,
        len_hi=len_hi,
        alt_table=table,
    )
    return IndexCheckpoint(
        volume_id=vid, compaction_revision=revision, covered_bytes=covered, run=run
    )


def _padding(nbytes: int) -> int:
    return -nbytes % ARRAY_ALIGNMENT_BYTES


def write(storage: Storage, name: str, checkpoint: IndexCheckpoint) -> None:
    """Atomically replaces the index file `name`."""
    write_file_atomic(storage, name, encode(checkpoint))


def load(storage: Storage, name: str) -> IndexCheckpoint:
    return decode(read_file(storage, name))
