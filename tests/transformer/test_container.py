"""The container check of PNG, JPEG and WebP: every valid file accepted, every hand-broken one
rejected as corrupt_file by the check itself (no decoder asked), from bytes and from a file
alike, within its limits."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from common.photo import Format
from tests.transformer import images
from transformer.byte_source import BytesSource
from transformer.container import check_container, check_container_file
from transformer.errors import Rejected
from transformer.image_probe import probe_image
from transformer.limits import MediaLimits
from transformer.sniff import sniff

LIMITS = MediaLimits()


def check(data: bytes, limits: MediaLimits = LIMITS) -> None:
    check_container(BytesSource(data), sniff(data[:512]), limits)


def broken(data: bytes, limits: MediaLimits = LIMITS) -> str:
    """The check's message for `data`, which it must reject as corrupt_file; the whole
    probe must reject it the same way."""
    with pytest.raises(Rejected) as got:
        check(data, limits)
    assert (got.value.code, got.value.status) == ("corrupt_file", 422)
    message = got.value.message
    assert message.startswith("The file is truncated or corrupt: ") and len(message) < 200
    with pytest.raises(Rejected) as probed:
        probe_image(data, limits)
    assert probed.value.code == "corrupt_file"
    return message


VALID = {
    "jpeg": images.jpeg(640, 480, orientation=6, gps=True, xmp=True),
    "jpeg-camera": images.camera_jpeg(),
    "jpeg-cmyk": images.cmyk_jpeg(240, 160),
    "jpeg-p3": images.p3_jpeg(200, 100),
    "jpeg-bad-icc": images.with_bad_icc(images.jpeg(300, 200)),
    "jpeg-progressive": images.progressive_jpeg(640, 480),
    "jpeg-restarts": images.restart_jpeg(640, 480),
    "png": images.png(300, 200),
    "png-alpha": images.png_alpha(300, 200),
    "png-16bit": images.png16(200, 150),
    "png-bomb": images.bomb_png(30000),
    "webp": images.webp(320, 240),
    "webp-lossless": images.webp_lossless(),
    "webp-alpha": images.webp_alpha(),
}


@pytest.mark.parametrize("data", VALID.values(), ids=VALID.keys())
def test_valid_files_pass(data: bytes, tmp_path: Path) -> None:
    check(data)
    path = tmp_path / "upload"
    path.write_bytes(data)
    check_container_file(path, sniff(data[:512]), LIMITS)


def test_a_file_is_judged_as_its_bytes_are(tmp_path: Path) -> None:
    data = images.png(300, 200)
    path = tmp_path / "upload"
    path.write_bytes(data[:-1])
    with pytest.raises(Rejected) as got:
        check_container_file(path, Format.PNG, LIMITS)
    assert got.value.message == broken(data[:-1])


# -- PNG ------------------------------------------------------------------------------------


def _png_boundaries(data: bytes) -> list[int]:
    """The offset of every chunk's start, and the end of the file."""
    offsets = [len(images.PNG_SIGNATURE)]
    for _, body in images.png_chunks(data):
        offsets.append(offsets[-1] + 12 + len(body))
    return offsets


def test_a_png_cut_anywhere_at_a_chunk_boundary_or_beside_one_is_refused() -> None:
    data = images.png_claiming(300, 200)  # small: IHDR, IDAT, IEND
    boundaries = _png_boundaries(data)
    assert boundaries[-1] == len(data)
    check(data)
    for end in boundaries[:-1]:
        for cut in (end - 1, end, end + 1, end + 8):
            if cut >= len(images.PNG_SIGNATURE):  # shorter is no PNG at all (415)
                broken(data[:cut])
    # a real one, its IDAT in several chunks, cut at each boundary
    multi = images.png(300, 200)
    assert [k for k, _ in images.png_chunks(multi)].count(b"IDAT") > 1
    for end in _png_boundaries(multi)[:-1]:
        broken(multi[:end])


def test_png_crc_of_every_chunk() -> None:
    data = images.png(300, 200)
    for index, at in enumerate(_png_boundaries(data)[:-1]):
        (length,) = struct.unpack_from(">I", data, at)
        wheres = [at + 8 + length // 2, at + 8 + length]  # its data, its CRC
        if index:
            wheres.append(at + 4)  # its type ("IDAT" becomes "YDAT", still letters)
        for where in wheres:
            bad = bytearray(data)
            bad[where] ^= 0x10
            assert "fails its CRC" in broken(bytes(bad))


def test_png_chunk_order() -> None:
    chunks = images.png_chunks(images.png_claiming(300, 200))
    ihdr, idat, iend = chunks
    text = (b"tEXt", b"Comment\0hello")
    assert images.png_of(chunks) == images.png_claiming(300, 200)
    check(images.png_of([ihdr, text, idat, idat, text, iend]))
    assert "IEND" in broken(images.png_of([ihdr, idat]))  # no IEND
    assert "no IDAT" in broken(images.png_of([ihdr, text, iend]))
    assert "IHDR" in broken(images.png_of([text, ihdr, idat, iend]))
    assert "IHDR" in broken(images.png_of([ihdr, ihdr, idat, iend]))
    assert "IHDR" in broken(images.png_of([(b"IHDR", ihdr[1][:12]), idat, iend]))
    assert "consecutive" in broken(images.png_of([ihdr, idat, text, idat, iend]))
    assert "end with" in broken(images.png_of([ihdr, idat, iend, text]))  # IEND not last
    assert "end with" in broken(images.png_of([ihdr, idat, iend]) + b"\0")
    assert "end with" in broken(images.png_of([ihdr, idat, (b"IEND", b"x")]))
    head = images.png_of([ihdr, idat])
    assert "past the end" in broken(head + struct.pack(">I", 2**20) + b"IEND" + bytes(4))
    assert "past the end" in broken(head + struct.pack(">I", 2**31) + b"IEND" + bytes(4))


def test_png_chunk_count_is_bounded() -> None:
    chunks = images.png_chunks(images.png_claiming(300, 200))
    ihdr, idat, iend = chunks
    many = [ihdr, *[(b"tEXt", b"k\0v")] * 10, idat, iend]
    check(images.png_of(many), MediaLimits(container_parts_max=13))
    assert "more than 12 chunks" in broken(images.png_of(many), MediaLimits(container_parts_max=12))


# -- JPEG -----------------------------------------------------------------------------------


def _sos(data: bytes) -> int:
    return data.index(b"\xff\xda")


def test_a_jpeg_without_its_end_of_image_marker_is_refused() -> None:
    data = images.camera_jpeg()
    assert data.endswith(b"\xff\xd9")
    for cut in (1, 2, 3, 100, len(data) // 2):
        broken(data[:-cut])
    broken(data[: _sos(data) + 20])  # inside the scan header's data
    broken(data[: _sos(data) + 3])  # inside the scan header itself
    broken(data[:3])


def test_jpeg_segments() -> None:
    data = images.jpeg(640, 480)
    sos = _sos(data)
    soi, app, tail = data[:2], b"\xff\xfe\x00\x07hello", data[2:]  # a COM segment
    check(soi + app + tail)
    check(soi + b"\xff\xff\xff" + tail)  # fill bytes before a marker
    assert "past the end" in broken(soi + b"\xff\xfe\x7f\xff" + tail[:100])
    assert "no marker" in broken(soi + app + b"\x00" + tail)  # a stray byte between segments
    assert "past the end" in broken(soi + b"\xff\xfe\x00\x01" + tail)  # length below 2
    assert "misplaced" in broken(soi + b"\xff\xd8" + tail)
    assert "before any image data" in broken(data[:sos] + b"\xff\xd9")  # no SOS
    # no frame header before the scan
    sof = data.index(b"\xff\xc0")
    (sof_length,) = struct.unpack_from(">H", data, sof + 2)
    assert "frame header" in broken(data[:sof] + data[sof + 2 + sof_length :])
    # the scan's data may hold stuffed 0xFF 0x00 pairs and restart markers, not other markers
    scan = sos + 2 + struct.unpack_from(">H", data, sos + 2)[0]
    broken(data[:scan] + b"\x12\xff\xc4" + data[scan:])


def test_bytes_after_the_end_of_image_are_left_alone() -> None:
    # Motion Photos append a video, MPO files a second picture, phones their trailers.
    data = images.jpeg(640, 480)
    check(data + b"\0\0\0\x18ftypmp42" + bytes(1000))
    check(data + images.jpeg(320, 240))
    assert probe_image(data + images.jpeg(320, 240), LIMITS).width == 640


def test_jpeg_segment_count_is_bounded() -> None:
    data = images.jpeg(320, 240)
    count = 1  # EOI
    pos = 2
    while data[pos + 1] != 0xDA:
        count += 1
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    count += 1  # SOS
    check(data, MediaLimits(container_parts_max=count))
    assert "segments" in broken(data, MediaLimits(container_parts_max=count - 1))


# -- WebP -----------------------------------------------------------------------------------


def _riff(*chunks: bytes, size_delta: int = 0) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) + size_delta) + body


def _chunk(kind: bytes, payload: bytes, *, pad: bool = True) -> bytes:
    out = kind + struct.pack("<I", len(payload)) + payload
    return out + (b"\0" if pad and len(payload) % 2 else b"")


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    pos = 12
    while pos < len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        out.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + length % 2
    return out


def test_the_riff_size_must_be_the_file_size() -> None:
    data = images.webp(320, 240)
    (size,) = struct.unpack_from("<I", data, 4)
    assert size == len(data) - 8
    for delta in (-2, 1, 2, 1000):
        fixed = data[:4] + struct.pack("<I", size + delta) + data[8:]
        assert "RIFF size" in broken(fixed)
    # one byte short, the file may be one pad byte longer: but then the last chunk overflows
    assert "past the end" in broken(data[:4] + struct.pack("<I", size - 1) + data[8:])
    assert "RIFF size" in broken(data[:-1])
    assert "RIFF size" in broken(data + b"\0")


def test_one_pad_byte_the_riff_size_leaves_out_is_allowed() -> None:
    # A writer may count the last chunk's payload but not its pad byte.
    chunks = _chunks(images.webp(320, 240))
    odd = (b"XMP ", b"<x/>a")
    assert len(odd[1]) % 2
    padded = _riff(*(_chunk(k, p) for k, p in [*chunks, odd]))
    check(padded)
    check(padded[:4] + struct.pack("<I", len(padded) - 9) + padded[8:])  # pad uncounted
    unpadded = _riff(*(_chunk(k, p) for k, p in chunks), _chunk(*odd, pad=False))
    check(unpadded)  # the pad left out of the file too
    assert "RIFF size" in broken(padded[:4] + struct.pack("<I", len(padded) - 10) + padded[8:])


def test_webp_chunks() -> None:
    chunks = _chunks(images.webp(320, 240))
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"VP8X" and b"VP8 " in kinds and b"EXIF" in kinds
    vp8x, vp8 = chunks[0], chunks[kinds.index(b"VP8 ")]
    others = [c for c in chunks if c[0] not in (b"VP8X", b"VP8 ")]
    check(_riff(*(_chunk(*c) for c in chunks)))
    check(_riff(_chunk(*vp8)))  # the simple format
    assert "past the end" in broken(
        _riff(_chunk(*vp8)[:4] + struct.pack("<I", len(vp8[1]) + 2) + _chunk(*vp8)[8:])
    )
    assert "VP8, VP8L or VP8X" in broken(_riff(*(_chunk(*c) for c in [*others, vp8])))
    assert "image chunk" in broken(_riff(*(_chunk(*c) for c in [vp8x, *others])))
    assert "image chunk" in broken(_riff(*(_chunk(*c) for c in [vp8x, vp8, vp8])))
    assert "VP8X" in broken(_riff(_chunk(vp8x[0], vp8x[1][:9]), _chunk(*vp8)))
    assert "no chunks" in broken(_riff())
    assert "chunk header" in broken(_riff(_chunk(*vp8), b"EXIF"))
    # animated: ANMF frames instead of an image chunk
    animated = bytes([vp8x[1][0] | 0x02]) + vp8x[1][1:]
    frame = (b"ANMF", bytes(16) + _chunk(*vp8))
    check(_riff(_chunk(b"VP8X", animated), _chunk(b"ANIM", bytes(6)), _chunk(*frame)))
    assert "frames" in broken(_riff(_chunk(b"VP8X", animated), _chunk(b"ANIM", bytes(6))))


def test_webp_bitstream_headers() -> None:
    vp8 = next(c for c in _chunks(images.webp(320, 240)) if c[0] == b"VP8 ")

    def with_vp8(payload: bytes) -> bytes:
        return _riff(_chunk(b"VP8 ", payload))

    assert "VP8 frame" in broken(with_vp8(vp8[1][:3] + b"\x9d\x01\x2b" + vp8[1][6:]))
    assert "VP8 frame" in broken(with_vp8(bytes([vp8[1][0] | 1]) + vp8[1][1:]))  # no key frame
    tag = vp8[1][0] | vp8[1][1] << 8 | vp8[1][2] << 16
    too_long = (tag & 0x1F) | (len(vp8[1]) << 5)  # a first partition longer than the chunk
    assert "VP8 frame" in broken(with_vp8(too_long.to_bytes(3, "little") + vp8[1][3:]))
    assert "too short" in broken(with_vp8(vp8[1][:9]))
    (vp8l,) = _chunks(images.webp_lossless())
    assert vp8l[0] == b"VP8L"
    assert "VP8L" in broken(_riff(_chunk(b"VP8L", b"\x2e" + vp8l[1][1:])))
    version = vp8l[1][:4] + bytes([vp8l[1][4] | 0x20]) + vp8l[1][5:]
    assert "VP8L" in broken(_riff(_chunk(b"VP8L", version)))
    assert "too short" in broken(_riff(_chunk(b"VP8L", vp8l[1][:4])))


def test_the_container_limits_are_validated() -> None:
    for bad in (
        {"container_parts_max": 7},  # fewer than the boxes of the smallest HEIC
        {"container_parts_max": 0},
        {"heif_entries_max": 0},
        {"mp4_table_entries_max": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MediaLimits(**bad)  # type: ignore[arg-type]
