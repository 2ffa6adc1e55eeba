"""The sample tables of an MP4 or MOV movie: the part of the container check that makes sure
every sample of every track lies inside the file. A file cut inside `mdat` keeps an index
(`moov`, at the front) that promises samples past its end; ffprobe believes it.

The boxes read, in moov/trak/mdia/minf/stbl, big-endian, each after a FullBox header
(version u8, flags u24):

    stco   entry_count u32 | chunk_offset u32 x entry_count       (offsets in the file)
    co64   entry_count u32 | chunk_offset u64 x entry_count
    stsz   sample_size u32 | sample_count u32 | entry_size u32 x sample_count, only when
           sample_size is 0 (else every sample is sample_size bytes)
    stz2   reserved u24 | field_size u8 (4, 8 or 16) | sample_count u32 |
           entry_size x sample_count, field_size bits each (4 bits: high nibble first)
    stsc   entry_count u32 | (first_chunk u32 (from 1), samples_per_chunk u32,
           sample_description_index u32) x entry_count: runs of chunks with as many samples

A chunk's bytes are its samples' sizes summed, from its offset. QuickTime sound often says
sample_size 1 and counts uncompressed frames in `stsc` (IMA4, for one, packs 64 of them in 34
bytes): the sizes are then no measure of the bytes, and such a chunk is only checked to start
inside the file. Fragmented movies keep their samples in `moof` boxes, which are checked as
boxes only.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from transformer.bmff import FULL_BOX_BYTES, Box, BoxReader, Fields, corrupt

_COUNT_BYTES: Final = 4
_STSZ_HEAD_BYTES: Final = FULL_BOX_BYTES + 4 + 4  # sample_size, sample_count
_STZ2_FIELD_BITS: Final = frozenset({4, 8, 16})
_STSC_ENTRY_BYTES: Final = 3 * 4
# QuickTime's "sample sizes are not byte counts" (see the module docstring).
_SIZES_NOT_BYTES: Final = 1

_Ints = npt.NDArray[np.int64]
_Offsets = npt.NDArray[np.uint64]


def check_tracks(reader: BoxReader, moov: Box) -> None:
    """Checks every track of `moov` (see the module docstring). Raises Rejected
    ("corrupt_file")."""
    size = np.uint64(reader.src.size)
    for number, trak in enumerate(moov.all(b"trak"), 1):
        where = f"track {number}"
        stbl = trak.one(b"mdia", where).one(b"minf", where).one(b"stbl", where)
        offsets = _chunk_offsets(reader, stbl, where)
        per_chunk = _samples_per_chunk(reader, stbl.one(b"stsc", where), len(offsets), where)
        chunk_bytes = _chunk_bytes(reader, stbl, per_chunk, where)
        room = size - np.minimum(offsets, size)
        past_end = np.flatnonzero((offsets > size) | (chunk_bytes > room))
        if past_end.size:
            raise corrupt(f"chunk {past_end[0] + 1} of {where} lies past the end of the file")


def _entry_count(reader: BoxReader, box: Box, what: str) -> int:
    """The u32 count after the FullBox header, checked against mp4_table_entries_max."""
    fields = Fields(reader.payload(box, FULL_BOX_BYTES + _COUNT_BYTES, what), what)
    fields.uint(FULL_BOX_BYTES)
    return _bounded(reader, fields.uint(_COUNT_BYTES), what)


def _bounded(reader: BoxReader, count: int, what: str) -> int:
    if count > reader.limits.mp4_table_entries_max:
        raise corrupt(f"a {what} table has more than {reader.limits.mp4_table_entries_max} entries")
    return count


def _table(reader: BoxReader, box: Box, head_bytes: int, table_bytes: int, what: str) -> bytes:
    """The `table_bytes` after the first `head_bytes` of `box`'s payload."""
    return bytes(reader.payload(box, head_bytes + table_bytes, what)[head_bytes:])


def _chunk_offsets(reader: BoxReader, stbl: Box, where: str) -> _Offsets:
    stco, co64 = stbl.optional(b"stco", where), stbl.optional(b"co64", where)
    if (stco is None) == (co64 is None):
        raise corrupt(f"{where} has no single chunk offset table")
    box, what, dtype = (stco, "stco", ">u4") if stco is not None else (co64, "co64", ">u8")
    assert box is not None
    count = _entry_count(reader, box, what)
    head_bytes = FULL_BOX_BYTES + _COUNT_BYTES
    table = _table(reader, box, head_bytes, count * np.dtype(dtype).itemsize, what)
    return np.frombuffer(table, dtype=dtype).astype(np.uint64)


def _samples_per_chunk(reader: BoxReader, stsc: Box, chunks: int, where: str) -> _Ints:
    """The number of samples in each of `chunks` chunks, from the runs of `stsc`."""
    count = _entry_count(reader, stsc, "stsc")
    head_bytes = FULL_BOX_BYTES + _COUNT_BYTES
    table = _table(reader, stsc, head_bytes, count * _STSC_ENTRY_BYTES, "stsc")
    runs = np.frombuffer(table, dtype=">u4").reshape(count, 3).astype(np.int64)
    if not count:
        return np.zeros(chunks, np.int64)
    first, samples = runs[:, 0], runs[:, 1]
    if first[0] != 1 or bool((np.diff(first) <= 0).any()):
        raise corrupt(f"the sample-to-chunk table of {where} is out of order")
    # A run lasts to the next one's first chunk; runs past the last chunk describe none.
    starts = np.minimum(first, chunks + 1)
    stops = np.append(starts[1:], chunks + 1)
    per_chunk: _Ints = np.repeat(samples, stops - starts)
    return per_chunk


def _chunk_bytes(reader: BoxReader, stbl: Box, per_chunk: _Ints, where: str) -> _Offsets:
    """The bytes of each chunk: its samples' sizes summed (see the module docstring)."""
    sample_size, sample_count, sizes = _sample_sizes(reader, stbl, where)
    held = int(per_chunk.sum())
    if held != sample_count:
        raise corrupt(f"the chunks of {where} hold {held} samples but it sizes {sample_count}")
    if sizes is None:
        if sample_size == _SIZES_NOT_BYTES:
            return (per_chunk > 0).astype(np.uint64)  # at least its first byte
        return per_chunk.astype(np.uint64) * np.uint64(sample_size)
    ends = np.concatenate(([0], np.cumsum(sizes)))
    firsts = np.concatenate(([0], np.cumsum(per_chunk)))
    chunk_bytes: _Offsets = (ends[firsts[1:]] - ends[firsts[:-1]]).astype(np.uint64)
    return chunk_bytes


def _sample_sizes(reader: BoxReader, stbl: Box, where: str) -> tuple[int, int, _Ints | None]:
    """(the one size of every sample or 0, the sample count, each sample's size or None)."""
    stsz, stz2 = stbl.optional(b"stsz", where), stbl.optional(b"stz2", where)
    if (stsz is None) == (stz2 is None):
        raise corrupt(f"{where} has no single sample size table")
    if stsz is not None:
        head = Fields(reader.payload(stsz, _STSZ_HEAD_BYTES, "stsz"), "stsz")
        head.uint(FULL_BOX_BYTES)
        sample_size, count = head.uint(4), head.uint(4)
        if sample_size:
            return sample_size, count, None
        _bounded(reader, count, "stsz")
        table = _table(reader, stsz, _STSZ_HEAD_BYTES, count * 4, "stsz")
        return 0, count, np.frombuffer(table, dtype=">u4").astype(np.int64)
    assert stz2 is not None
    head = Fields(reader.payload(stz2, _STSZ_HEAD_BYTES, "stz2"), "stz2")
    head.uint(FULL_BOX_BYTES + 3)
    bits, count = head.uint(1), _bounded(reader, head.uint(4), "stz2")
    if bits not in _STZ2_FIELD_BITS:
        raise corrupt(f"the stz2 table of {where} has {bits}-bit fields")
    table = _table(reader, stz2, _STSZ_HEAD_BYTES, (count * bits + 7) // 8, "stz2")
    if bits == 16:
        return 0, count, np.frombuffer(table, dtype=">u2").astype(np.int64)
    packed = np.frombuffer(table, dtype=np.uint8)
    if bits == 8:
        return 0, count, packed.astype(np.int64)
    nibbles = np.stack([packed >> 4, packed & 0x0F], axis=1).reshape(-1)[:count]
    return 0, count, nibbles.astype(np.int64)
