"""The structure check of an upload's container, run before any decoder sees the bytes.

Decoders are lenient: given a truncated HEIC, PNG or WebP, some decode what is there and
make up the rest. Validation must not depend on that, so each accepted format's structure
is checked here, strictly and with bounded work (MediaLimits' container_* limits): every
length within the file, the chunks a decoder needs present and in order, and the file's
end where the format puts it. docs/formats/containers.md lists what is checked.

PNG, JPEG and WebP are checked in this module; the ISO-BMFF formats (HEIC, MP4, MOV) in
bmff.py. A failure is Rejected("corrupt_file"), the code a failed decode gives; nothing
else escapes for any bytes (a read outside the source would be a bug: ValueError).
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import Final

from common.photo import Format
from transformer import bmff, heif, movie
from transformer.bmff import corrupt, printable
from transformer.byte_source import READ_BLOCK_BYTES, ByteSource, open_file_source
from transformer.limits import MediaLimits


def check_container(src: ByteSource, fmt: Format, limits: MediaLimits) -> None:
    """Checks the structure of a file already sniffed as `fmt`. Raises Rejected
    ("corrupt_file"), and only Rejected, for bytes that are not a whole, well-formed file of
    that format; does nothing for formats it has no check for."""
    if fmt == Format.PNG:
        _check_png(src, limits)
    elif fmt == Format.JPEG:
        _check_jpeg(src, limits)
    elif fmt == Format.WEBP:
        _check_webp(src, limits)
    elif fmt in (Format.HEIC, Format.MP4, Format.MOV):
        _check_bmff(src, fmt, limits)


def check_container_file(path: Path, fmt: Format, limits: MediaLimits) -> None:
    """check_container over the file at `path`, read in bounded pieces. Blocking: run it on
    a thread. Raises Rejected, or OSError when the file cannot be read."""
    with open_file_source(path) as src:
        check_container(src, fmt, limits)


def _check_bmff(src: ByteSource, fmt: Format, limits: MediaLimits) -> None:
    reader, top = bmff.read_boxes(src, fmt, limits)
    moov = top.optional(b"moov", "the file")
    if fmt == Format.HEIC:
        heif.check_items(reader, top.one(b"meta", "the file"))
    elif moov is None:
        raise corrupt("the movie has no moov box (its index)")
    if moov is not None:  # an image sequence in a HEIF too
        movie.check_tracks(reader, moov)


def _crc32(src: ByteSource, offset: int, length: int) -> int:
    crc = 0
    end = offset + length
    while offset < end:
        step = min(READ_BLOCK_BYTES, end - offset)
        crc = zlib.crc32(src.read(offset, step), crc)
        offset += step
    return crc


# -- PNG ------------------------------------------------------------------------------------
#
# The signature, then chunks, big-endian:
#
#     0        4        8              8+length       12+length
#     +--------+--------+--------------+--------------+
#     | length |  type  |     data     |     crc      |
#     |  u32   | 4 ASCII| length bytes | u32, CRC-32 of type and data
#     +--------+--------+--------------+--------------+
#
# IHDR (13 bytes) first, IDAT chunks one after another, IEND (empty) last and at the end.

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK_HEAD: Final = struct.Struct(">I4s")
_PNG_CRC: Final = struct.Struct(">I")
_PNG_CHUNK_OVERHEAD: Final = _PNG_CHUNK_HEAD.size + _PNG_CRC.size
_PNG_LENGTH_MAX: Final = 2**31 - 1
_PNG_IHDR_BYTES: Final = 13


def _check_png(src: ByteSource, limits: MediaLimits) -> None:
    size = src.size
    if size < len(PNG_SIGNATURE) or bytes(src.read(0, len(PNG_SIGNATURE))) != PNG_SIGNATURE:
        raise corrupt("no PNG signature")
    pos = len(PNG_SIGNATURE)
    seen_idat = idat_done = False
    for index in range(limits.container_parts_max):
        if pos + _PNG_CHUNK_OVERHEAD > size:
            raise corrupt("the PNG ends before its IEND chunk")
        length, kind = _PNG_CHUNK_HEAD.unpack(src.read(pos, _PNG_CHUNK_HEAD.size))
        end = pos + _PNG_CHUNK_OVERHEAD + length
        if length > _PNG_LENGTH_MAX or end > size:
            raise corrupt(f"PNG chunk {printable(kind)} runs past the end of the file")
        if not kind.isalpha():
            raise corrupt("a PNG chunk type is not four letters")
        if (index == 0) != (kind == b"IHDR") or (index == 0 and length != _PNG_IHDR_BYTES):
            raise corrupt("the PNG does not start with one IHDR chunk")
        if kind == b"IDAT":
            if idat_done:
                raise corrupt("the PNG's IDAT chunks are not consecutive")
            seen_idat = True
        elif seen_idat:
            idat_done = True
        (crc,) = _PNG_CRC.unpack(src.read(end - _PNG_CRC.size, _PNG_CRC.size))
        if _crc32(src, pos + 4, 4 + length) != crc:
            raise corrupt(f"PNG chunk {printable(kind)} fails its CRC")
        pos = end
        if kind == b"IEND":
            if not seen_idat:
                raise corrupt("the PNG has no IDAT chunk")
            if length != 0 or pos != size:
                raise corrupt("the PNG does not end with its IEND chunk")
            return
    raise corrupt(f"the PNG has more than {limits.container_parts_max} chunks")


# -- JPEG -----------------------------------------------------------------------------------
#
# SOI (FF D8), then segments:
#
#     +------+--------+--------+-------------------+
#     | 0xFF | marker | length | payload           |   length: u16 big-endian, counting
#     +------+--------+--------+-------------------+   itself (>= 2), not the marker
#
# Standalone markers (RSTn, TEM) have no length; 0xFF fill bytes may precede any marker.
# An SOS segment is followed by entropy-coded data, where an 0xFF is followed by 0x00 (a
# stuffed byte) or by RSTn; any other marker ends the scan. A progressive JPEG has several
# scans. EOI (FF D9) ends the image; bytes after it are left alone (Google's Motion Photos
# append a video there, MPO files a second picture, Samsung phones a trailer).

_SOI: Final = b"\xff\xd8"
_EOI: Final = 0xD9
_SOS: Final = 0xDA
_TEM: Final = 0x01
_STANDALONE: Final = frozenset({_TEM, *range(0xD0, 0xD8)})  # TEM, RST0..RST7
# SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC), which share the range.
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_MARKER_BYTES: Final = 2
_LENGTH_BYTES: Final = 2
_SOF_LENGTH_MIN: Final = 8  # precision, height, width, component count
# In entropy-coded data: an 0xFF that starts a marker (not a stuffed 0x00, an RSTn or fill).
_SCAN_END: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _check_jpeg(src: ByteSource, limits: MediaLimits) -> None:
    size = src.size
    if size < len(_SOI) or bytes(src.read(0, len(_SOI))) != _SOI:
        raise corrupt("no JPEG start-of-image marker")
    pos = len(_SOI)
    seen_sof = seen_sos = False
    for _ in range(limits.container_parts_max):
        if pos + _MARKER_BYTES > size:
            raise corrupt("the JPEG has no end-of-image marker")
        prefix, marker = src.read(pos, _MARKER_BYTES)
        if prefix != 0xFF:
            raise corrupt("a JPEG segment is followed by bytes that are no marker")
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        if marker == _EOI:
            if not seen_sos:
                raise corrupt("the JPEG ends before any image data")
            return
        if marker in _STANDALONE:
            pos += _MARKER_BYTES
            continue
        if marker in (0x00, _SOI[1]):
            raise corrupt("the JPEG has a misplaced marker")
        if pos + _MARKER_BYTES + _LENGTH_BYTES > size:
            raise corrupt("the JPEG ends inside a segment header")
        (length,) = struct.unpack(">H", src.read(pos + _MARKER_BYTES, _LENGTH_BYTES))
        end = pos + _MARKER_BYTES + length
        if length < _LENGTH_BYTES or end > size:
            raise corrupt("a JPEG segment runs past the end of the file")
        if marker in _SOF:
            if length < _SOF_LENGTH_MIN:
                raise corrupt("the JPEG frame header is too short")
            seen_sof = True
        if marker == _SOS:
            if not seen_sof:
                raise corrupt("the JPEG has image data before its frame header")
            seen_sos = True
            end = _scan_end(src, end)
        pos = end
    raise corrupt(f"the JPEG has more than {limits.container_parts_max} segments")


def _scan_end(src: ByteSource, pos: int) -> int:
    """The offset of the marker that ends the entropy-coded data starting at `pos`."""
    size = src.size
    while pos < size - 1:
        end = min(size, pos + READ_BLOCK_BYTES)
        found = _SCAN_END.search(src.read(pos, end - pos))
        if found is not None:
            return pos + found.start()
        pos = end - 1  # an 0xFF last in the block may start a marker in the next one
    raise corrupt("the JPEG ends inside its image data")


# -- WebP -----------------------------------------------------------------------------------
#
# A RIFF file, little-endian:
#
#     0      4        8      12
#     +------+--------+------+-----------------+
#     | RIFF |  size  | WEBP | chunks ...      |   size: u32, the bytes after this field
#     +------+--------+------+-----------------+
#
# A chunk is a fourcc, a u32 payload size and the payload, then a zero pad byte when the
# size is odd. The first chunk is the image ("VP8 " lossy, "VP8L" lossless) or VP8X (the
# extended format: flags and canvas, then ICCP, ANIM, ANMF, ALPH, the image, EXIF, XMP).

_RIFF_HEAD: Final = struct.Struct("<4sI4s")
_CHUNK_HEAD: Final = struct.Struct("<4sI")
_RIFF_SIZE_FIELD_END: Final = 8  # the RIFF size counts the bytes from here
_VP8_HEADER_BYTES: Final = 10  # frame tag (3), start code (3), width (2), height (2)
_VP8_START_CODE: Final = b"\x9d\x01\x2a"
_VP8L_HEADER_BYTES: Final = 5  # signature (1), 14-bit sides, alpha, 3-bit version
_VP8L_SIGNATURE: Final = 0x2F
_VP8X_BYTES: Final = 10  # flags (1), reserved (3), canvas width - 1, height - 1 (3 + 3)
_VP8X_ANIMATION: Final = 0x02
_SIDE_MASK: Final = 0x3FFF


def _check_webp(src: ByteSource, limits: MediaLimits) -> None:
    size = src.size
    if size < _RIFF_HEAD.size:
        raise corrupt("the WebP ends inside its RIFF header")
    riff, riff_size, webp = _RIFF_HEAD.unpack(src.read(0, _RIFF_HEAD.size))
    riff_end = _RIFF_SIZE_FIELD_END + riff_size
    # A writer may leave the last chunk's pad byte out of the RIFF size.
    if (riff, webp) != (b"RIFF", b"WEBP") or size not in (riff_end, riff_end + riff_size % 2):
        raise corrupt(f"the RIFF size says {riff_end} bytes but the file has {size}")
    chunks: list[tuple[bytes, int, int]] = []  # (fourcc, payload offset, payload size)
    pos = _RIFF_HEAD.size
    while pos < riff_end:
        if len(chunks) >= limits.container_parts_max:
            raise corrupt(f"the WebP has more than {limits.container_parts_max} chunks")
        if pos + _CHUNK_HEAD.size > riff_end:
            raise corrupt("the WebP ends inside a chunk header")
        kind, length = _CHUNK_HEAD.unpack(src.read(pos, _CHUNK_HEAD.size))
        payload = pos + _CHUNK_HEAD.size
        if payload + length > riff_end:
            raise corrupt(f"WebP chunk {printable(kind)} runs past the end of the file")
        chunks.append((kind, payload, length))
        pos = payload + length + length % 2
    if not chunks:
        raise corrupt("the WebP has no chunks")
    first = chunks[0][0]
    if first in (b"VP8 ", b"VP8L"):
        _check_webp_image(src, chunks[0])
    elif first == b"VP8X":
        _check_vp8x(src, chunks)
    else:
        raise corrupt("the WebP does not start with a VP8, VP8L or VP8X chunk")


def _check_vp8x(src: ByteSource, chunks: list[tuple[bytes, int, int]]) -> None:
    _, offset, length = chunks[0]
    if length < _VP8X_BYTES:
        raise corrupt("the WebP's VP8X chunk is too short")
    flags = src.read(offset, 1)[0]
    kinds = [kind for kind, _, _ in chunks]
    if flags & _VP8X_ANIMATION:
        if b"ANMF" not in kinds:
            raise corrupt("the animated WebP has no frames")
        return
    images = [chunk for chunk in chunks if chunk[0] in (b"VP8 ", b"VP8L")]
    if len(images) != 1:
        raise corrupt("the WebP has no single VP8 or VP8L image chunk")
    _check_webp_image(src, images[0])


def _check_webp_image(src: ByteSource, chunk: tuple[bytes, int, int]) -> None:
    """The bitstream header of a "VP8 " (a key frame) or "VP8L" chunk."""
    kind, offset, length = chunk
    if kind == b"VP8 ":
        if length < _VP8_HEADER_BYTES:
            raise corrupt("the WebP's VP8 chunk is too short")
        head = bytes(src.read(offset, _VP8_HEADER_BYTES))
        tag = head[0] | head[1] << 8 | head[2] << 16
        width, height = struct.unpack_from("<HH", head, 6)
        first_partition_bytes = tag >> 5
        if (
            tag & 1  # 0 is a key frame
            or head[3:6] != _VP8_START_CODE
            or not width & _SIDE_MASK
            or not height & _SIDE_MASK
            or first_partition_bytes > length - _VP8_HEADER_BYTES
        ):
            raise corrupt("the WebP's VP8 frame header is broken")
    else:
        if length < _VP8L_HEADER_BYTES:
            raise corrupt("the WebP's VP8L chunk is too short")
        head = bytes(src.read(offset, _VP8L_HEADER_BYTES))
        (fields,) = struct.unpack_from("<I", head, 1)
        if head[0] != _VP8L_SIGNATURE or fields >> 29:  # the version must be 0
            raise corrupt("the WebP's VP8L header is broken")
