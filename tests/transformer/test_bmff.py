"""The ISO-BMFF box reader under the container check: header forms, bounded work (boxes,
depth), reads of headers and tables only, and, under random mutations of real and built
HEICs and movies, nothing but Rejected and no read outside the file."""

from __future__ import annotations

import functools
import re
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from common.photo import Format
from tests.transformer import heif_files, images
from tests.transformer.heif_files import box, build
from tests.transformer.movie_files import Track, even_track, movie
from transformer.bmff import read_boxes
from transformer.byte_source import BytesSource, check_range
from transformer.container import check_container
from transformer.errors import Rejected
from transformer.limits import MediaLimits

LIMITS = MediaLimits()


class WatchedSource:
    """A source over bytes that fails the test on a read outside them and records what
    was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> memoryview:
        assert offset >= 0 and length >= 0 and offset + length <= len(self.data), (offset, length)
        self.reads.append((offset, length))
        return memoryview(self.data)[offset : offset + length]

    @property
    def bytes_read(self) -> int:
        return sum(length for _, length in self.reads)


def broken(data: bytes, fmt: Format, limits: MediaLimits = LIMITS) -> str:
    with pytest.raises(Rejected) as got:
        check_container(BytesSource(data), fmt, limits)
    assert got.value.code == "corrupt_file"
    return got.value.message


def test_box_header_forms() -> None:
    data = build(heif_files.single())
    _, top = read_boxes(BytesSource(data), Format.HEIC, LIMITS)
    assert [b.kind for b in top.children] == [b"ftyp", b"meta", b"mdat"]
    meta = top.children[1]
    assert meta.body == meta.start + 8 and meta.children[0].start == meta.body + 4  # FullBox
    uuid = struct.pack(">I", 8 + 16 + 3) + b"uuid" + bytes(range(16)) + b"abc"
    _, top = read_boxes(BytesSource(data + uuid), Format.HEIC, LIMITS)
    last = top.children[-1]
    assert (last.kind, last.body - last.start, last.end) == (b"uuid", 24, len(data) + len(uuid))
    assert "uuid runs past" in broken(data + uuid[:-1], Format.HEIC)
    short_uuid = struct.pack(">I", 20) + b"uuid" + bytes(12)  # shorter than its usertype
    assert "uuid is shorter than its own header" in broken(data + short_uuid, Format.HEIC)
    for size in (2, 7):
        free = struct.pack(">I", size) + b"free"
        assert "free is shorter than its own header" in broken(data + free, Format.HEIC)
    large = struct.pack(">I", 1) + b"free" + struct.pack(">Q", 15) + bytes(8)  # < 16
    assert "free is shorter than its own header" in broken(data + large, Format.HEIC)


def test_boxes_and_depth_are_bounded() -> None:
    data = build(heif_files.single()) + box(b"free") * 10
    _, top = read_boxes(BytesSource(data), Format.HEIC, LIMITS)
    counted = _count(top)
    check_container(BytesSource(data), Format.HEIC, MediaLimits(container_parts_max=counted))
    assert f"more than {counted - 1} boxes" in broken(
        data, Format.HEIC, MediaLimits(container_parts_max=counted - 1)
    )
    # edts is a container the reader enters: nest one in another, 17 deep
    tracks = (even_track(2, 1, 8),)
    plain = movie(tracks, bytes(16))

    def nest(levels: int) -> bytes:
        inner = box(b"free")
        for _ in range(levels - 1):
            inner = box(b"edts", inner)
        return inner

    check_container(BytesSource(plain + nest(16)), Format.MP4, LIMITS)
    assert "nest more than 16 levels" in broken(plain + nest(17), Format.MP4)
    # moov/trak/mdia/minf/stbl/stco: 6 levels, the least the limit may be
    shallow = MediaLimits(container_depth_max=6)
    check_container(BytesSource(plain + nest(6)), Format.MP4, shallow)
    assert "nest more than 6 levels" in broken(plain + nest(7), Format.MP4, shallow)
    for bad in (5, 65):
        with pytest.raises(ValueError, match="container_depth_max"):
            MediaLimits(container_depth_max=bad)


def _count(parent: object) -> int:
    children = getattr(parent, "children", ())
    return sum(1 + _count(child) for child in children)


def test_only_headers_and_tables_are_read() -> None:
    # A movie of 2 MB of samples, its index first: the check reads none of the samples.
    samples = bytes(2_000_000)
    track = Track(tuple(range(0, 2_000_000, 20_000)), (10_000,) * 200, ((1, 2),))
    data = movie((track,), samples, moov_first=True)
    src = WatchedSource(data)
    check_container(src, Format.MP4, LIMITS)
    mdat_body = len(data) - len(samples)
    assert all(offset + length <= mdat_body for offset, length in src.reads)
    assert src.bytes_read < 4096
    # A HEIC grid: the boxes' headers, the item tables and the grid's description in idat.
    heic = build(heif_files.grid())
    src = WatchedSource(heic)
    check_container(src, Format.HEIC, LIMITS)
    mdat = heic.index(b"mdat") - 4
    assert all(offset + length <= mdat + 8 for offset, length in src.reads)
    assert src.bytes_read < mdat


def test_a_read_outside_a_source_is_a_bug_not_a_verdict() -> None:
    src = BytesSource(b"0123456789")
    assert bytes(src.read(8, 2)) == b"89"
    for offset, length in ((9, 2), (-1, 1), (0, -1), (11, 0)):
        with pytest.raises(ValueError, match="outside"):
            src.read(offset, length)
    check_range(10, 10, 0)


# -- random mutations -------------------------------------------------------------------------


@functools.cache
def _ffmpeg_mp4() -> bytes:
    """A real MP4 (H.264 and AAC, index first), made once by ffmpeg."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clip.mp4"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
             "-i", "testsrc=size=96x64:rate=10:duration=1", "-f", "lavfi",
             "-i", "sine=duration=1", "-c:v", "libx264", "-preset", "ultrafast",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart", str(path)],
            check=True, timeout=60,
        )  # fmt: skip
        return path.read_bytes()


@functools.cache
def _seeds() -> tuple[tuple[bytes, Format], ...]:
    built_movie = movie(
        (even_track(6, 3, 40), Track((10, 400), (7, 9, 11), ((1, 2), (2, 1)))),
        bytes(range(256)) * 4,
        moov_first=True,
    )
    return (
        (build(heif_files.grid()), Format.HEIC),
        (images.heic(96, 72, alpha=True), Format.HEIC),
        (built_movie, Format.MP4),
        (_ffmpeg_mp4(), Format.MP4),
    )


# Box types whose 32-bit size field, and the fields after it, the mutations aim at.
_TARGETS = (b"ftyp", b"meta", b"hdlr", b"pitm", b"iinf", b"infe", b"iloc", b"iref", b"dimg",
            b"idat", b"iprp", b"ipco", b"mdat", b"moov", b"trak", b"mdia", b"minf", b"stbl",
            b"stco", b"stsz", b"stsc")  # fmt: skip
_VALUES = (0, 1, 2, 7, 8, 9, 16, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, Format]:
    seed, fmt = draw(st.sampled_from(_seeds()))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("field", "field", "field", "flip", "truncate", "splice")))
        if kind == "field":  # a size, a count, a version or an offset near a box's start
            target = draw(st.sampled_from(_TARGETS))
            starts = [i - 4 for i in range(len(data)) if data[i : i + 4] == target]
            if not starts:
                continue
            at = draw(st.sampled_from(starts)) + draw(st.sampled_from((0, 8, 12, 16, 20, 24)))
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.sampled_from(_VALUES)) % (1 << (8 * width))
            data[at : at + width] = value.to_bytes(width, "big")
        elif kind == "flip":
            where = draw(st.integers(0, len(data) - 1))
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data) - 1)) :]
        else:
            where = draw(st.integers(0, len(data)))
            data[where:where] = draw(st.binary(min_size=1, max_size=32))
        if not data:
            break
    return bytes(data), fmt


@pytest.mark.timeout(120)
@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutations_give_rejected_or_nothing_and_no_read_outside(case: tuple[bytes, Format]) -> None:
    data, fmt = case
    src = WatchedSource(data)
    try:
        check_container(src, fmt, LIMITS)
    except Rejected as e:
        assert (e.code, e.status) == ("corrupt_file", 422)
        assert len(e.message) < 200 and "\n" not in e.message
        event(f"rejected: {re.sub(r'[0-9]+', 'N', e.message.split(': ', 1)[1])}")
    else:
        event("accepted")
    assert src.bytes_read <= 2 * len(data)
