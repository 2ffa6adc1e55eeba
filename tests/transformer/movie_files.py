"""MP4/MOV files built box by box: a movie's index (moov, its tracks' sample tables) over
an mdat of plain bytes, so that a test can make one chunk of one track lie about where its
samples are. Not playable (the samples are no codec's), which the container check does not
look at.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tests.transformer.heif_files import box, full_box, large_box


@dataclass(frozen=True)
class Track:
    """One track's sample tables. offsets are relative to the start of mdat's payload (the
    builder makes them absolute); runs are stsc's (first_chunk, samples_per_chunk)."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]  # each sample's size; empty when constant_size is set
    runs: tuple[tuple[int, int], ...]
    constant_size: int = 0  # stsz's sample_size (0: the table gives each size)
    sample_count: int | None = None  # stsz's sample_count, when it must lie
    co64: bool = False
    stz2_bits: int = 0  # write stz2 with fields of this many bits instead of stsz
    offset_skew: tuple[int, int] = (0, 0)  # (chunk index, bytes) to move one chunk by


def _stbl(track: Track, mdat_body: int) -> bytes:
    offsets = [mdat_body + offset for offset in track.offsets]
    index, skew = track.offset_skew
    if offsets:
        offsets[index] += skew
    if track.co64:
        chunk_offsets = full_box(
            b"co64", 0, struct.pack(f">I{len(offsets)}Q", len(offsets), *offsets)
        )
    else:
        chunk_offsets = full_box(
            b"stco", 0, struct.pack(f">I{len(offsets)}I", len(offsets), *offsets)
        )
    count = len(track.sizes) if track.sample_count is None else track.sample_count
    if track.stz2_bits:
        bits = track.stz2_bits
        if bits == 4:
            nibbles = [*track.sizes, 0][: len(track.sizes) + len(track.sizes) % 2]
            table = bytes(a << 4 | b for a, b in zip(nibbles[::2], nibbles[1::2], strict=True))
        else:
            table = struct.pack(f">{len(track.sizes)}{'B' if bits == 8 else 'H'}", *track.sizes)
        sizes = full_box(b"stz2", 0, struct.pack(">I", bits), struct.pack(">I", count), table)
    else:
        table = struct.pack(f">{len(track.sizes)}I", *track.sizes)
        sizes = full_box(b"stsz", 0, struct.pack(">II", track.constant_size, count), table)
    runs = b"".join(struct.pack(">III", first, per, 1) for first, per in track.runs)
    stsc = full_box(b"stsc", 0, struct.pack(">I", len(track.runs)), runs)
    stsd = full_box(b"stsd", 0, struct.pack(">I", 0))
    return box(b"stbl", stsd, stsc, sizes, chunk_offsets)


def _moov(tracks: tuple[Track, ...], mdat_body: int) -> bytes:
    traks = [box(b"trak", box(b"mdia", box(b"minf", _stbl(track, mdat_body)))) for track in tracks]
    return box(b"moov", full_box(b"mvhd", 0, bytes(96)), *traks)


def movie(
    tracks: tuple[Track, ...],
    mdat: bytes,
    *,
    moov_first: bool = False,
    ftyp: bytes = b"isom",
    mdat_size: int | None = None,
    mdat_large: bool = False,
) -> bytes:
    """ftyp (unless `ftyp` is b""), then mdat and moov in either order. `mdat_size`
    overrides mdat's size field (0: "to the end of the file")."""
    head = box(b"ftyp", ftyp, bytes(4), ftyp, b"mp41") if ftyp else b""
    mdat_header = 16 if mdat_large else 8
    mdat_box = large_box(b"mdat", mdat) if mdat_large else box(b"mdat", mdat, size=mdat_size)
    if moov_first:
        moov_bytes = len(_moov(tracks, 0))  # offsets have a fixed width
        moov = _moov(tracks, len(head) + moov_bytes + mdat_header)
        return head + moov + mdat_box
    return head + mdat_box + _moov(tracks, len(head) + mdat_header)


def even_track(chunks: int, samples_per_chunk: int, sample_size: int) -> Track:
    """A track of `chunks` chunks back to back from mdat's start, each of samples of one size."""
    chunk_bytes = samples_per_chunk * sample_size
    return Track(
        offsets=tuple(i * chunk_bytes for i in range(chunks)),
        sizes=(sample_size,) * (chunks * samples_per_chunk),
        runs=((1, samples_per_chunk),),
    )
