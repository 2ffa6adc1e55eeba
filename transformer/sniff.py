"""What a file is, from its first bytes only (never its name or declared Content-Type: both
come from the client and are only claims).

ISO-BMFF files (HEIC, AVIF, MP4, MOV) all start with an `ftyp` box and are told apart by its
brands. An AVIF brand anywhere makes it AVIF (not accepted as an upload): AVIF files list
the generic HEIF brand `mif1` too, so without this rule they would pass as HEIC. Otherwise
the major brand decides, then the compatible brands in the order HEIC, MP4, MOV.
"""

from __future__ import annotations

import struct
from typing import Final

from common.photo import Format

# How many leading bytes `sniff` looks at: an ftyp box of up to 124 compatible brands.
SNIFF_BYTES: Final = 512
ACCEPTED_IMAGE_FORMATS: Final = (Format.JPEG, Format.PNG, Format.HEIC, Format.WEBP)
ACCEPTED_VIDEO_FORMATS: Final = (Format.MP4, Format.MOV)

_HEIC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis", b"avio"})
_MP4_BRANDS: Final = frozenset(
    {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9",
     b"mp41", b"mp42", b"mp71", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP", b"M4A ",
     b"MSNV", b"NDAS", b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"mmp4", b"f4v ", b"XAVC"}
)  # fmt: skip
_MOV_BRAND: Final = b"qt  "
# Classic QuickTime files may have no ftyp: they start with one of these atoms.
_MOV_ATOMS: Final = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_FTYP_HEADER_BYTES: Final = 16  # size, "ftyp", major brand, minor version


def _ftyp_brands(head: bytes) -> tuple[bytes, frozenset[bytes]] | None:
    """(major brand, compatible brands) of a leading ftyp box; None if there is none."""
    if len(head) < _FTYP_HEADER_BYTES or head[4:8] != b"ftyp":
        return None
    (size,) = struct.unpack(">I", head[:4])
    # A box size of 0 ("to the end") or 1 (64-bit size follows) is legal but odd for ftyp:
    # read the brands that `head` holds then.
    end = len(head) if size < _FTYP_HEADER_BYTES else min(size, len(head))
    compatible = frozenset(head[i : i + 4] for i in range(_FTYP_HEADER_BYTES, end - 3, 4))
    return head[8:12], compatible


def _iso_bmff(major: bytes, compatible: frozenset[bytes]) -> Format:
    if major in _AVIF_BRANDS or compatible & _AVIF_BRANDS:
        return Format.AVIF
    if major in _HEIC_BRANDS:
        return Format.HEIC
    if major in _MP4_BRANDS:
        return Format.MP4
    if major == _MOV_BRAND:
        return Format.MOV
    if compatible & _HEIC_BRANDS:
        return Format.HEIC
    if compatible & _MP4_BRANDS:
        return Format.MP4
    if _MOV_BRAND in compatible:
        return Format.MOV
    return Format.UNKNOWN


def sniff(head: bytes) -> Format:
    """The format of a file that starts with `head` (pass its first SNIFF_BYTES bytes, or the
    whole file when shorter). Format.UNKNOWN for anything not recognised; never raises."""
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
        return _iso_bmff(*brands)
    if len(head) >= 8 and head[4:8] in _MOV_ATOMS:
        return Format.MOV
    return Format.UNKNOWN
