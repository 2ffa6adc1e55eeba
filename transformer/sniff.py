"""What a file is, from its first bytes only (never its name or declared type).

ISO-BMFF files (HEIC, AVIF, MP4, MOV) are told apart by the brands of their `ftyp` box: an
`ftyp` whose major or compatible brands name AVIF is AVIF, even when it also lists `mif1`.
"""

from __future__ import annotations

import struct
from typing import Final

from common.photo import Format

SNIFF_BYTES: Final = 512
ACCEPTED_IMAGE_FORMATS: Final = (Format.JPEG, Format.PNG, Format.HEIC, Format.WEBP)
ACCEPTED_VIDEO_FORMATS: Final = (Format.MP4, Format.MOV)

_HEIC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_MP4_BRANDS: Final = frozenset(
    {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1",
     b"dash", b"M4V ", b"M4A ", b"MSNV", b"3gp4", b"3gp5", b"3g2a", b"mmp4", b"f4v "}
)  # fmt: skip
_MOV_ATOMS: Final = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


def _ftyp_brands(head: bytes) -> list[bytes] | None:
    """[major, compatible...] of a leading ftyp box, None if the file has none."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size = struct.unpack(">I", head[:4])[0]
    end = min(max(size, 16), len(head))
    brands = [head[8:12]]
    brands += [head[i : i + 4] for i in range(16, end - 3, 4)]
    return brands


def sniff(head: bytes) -> Format:
    """The format of a file starting with `head` (give at least SNIFF_BYTES when the file
    has them); Format.UNKNOWN for anything not recognised."""
    if head.startswith(b"\xff\xd8\xff"):
        return Format.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Format.PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Format.WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Format.GIF
    brands = _ftyp_brands(head)
    if brands is not None:
        found = set(brands)
        if found & _AVIF_BRANDS:
            return Format.AVIF
        if brands[0] == b"qt  ":
            return Format.MOV
        if found & _HEIC_BRANDS:
            return Format.HEIC
        if found & _MP4_BRANDS or b"qt  " in found:
            return Format.MP4 if found & _MP4_BRANDS else Format.MOV
        return Format.UNKNOWN
    if len(head) >= 8 and head[4:8] in _MOV_ATOMS:
        return Format.MOV
    return Format.UNKNOWN
