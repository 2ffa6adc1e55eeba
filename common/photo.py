"""Photo URLs, variant (alt) keys and formats: the seam between the media side and its users.

A photo URL names the bytes without the metadata database (BRIEF §3):

    /p/{volume}/{key}/{cookie}/{rendition}          negotiated: the format comes from Accept
    /p/{volume}/{key}/{cookie}/{rendition}.{ext}    exact: one format

volume 1..2^32-1 and key 0..2^64-1 in canonical decimal (no sign, no leading zeros),
cookie exactly 16 lower-case hex digits, rendition 0..2^24-1, ext one of `EXTENSIONS`.
Rendition 0 is the original upload: it has a cookie of its own that no public URL carries,
and the router serves it only to a request with the internal read credential. One photo
variant has exactly one URL: caches (ours, CDNs, browsers) key on it, so parsing is strict
and `photo_path(parse_photo_path(p)) == p` for every valid p. Private photos travel as
signed, expiring URLs (common/signed_photo.py).

Variant (alternate) key layout, as stored in the needle's u32 alt key:

    bit 31 ........................ 8 7 ........ 0
        |        rendition (u24)     | fmt (u8)  |

    alt = rendition << 8 | fmt

Format codes are part of the stored data: never renumber one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

# -- format codes (stored in alt keys: append only) ----------------------------------------


class Format(IntEnum):
    UNKNOWN = 0
    JPEG = 1
    WEBP = 2
    AVIF = 3
    PNG = 4
    HEIC = 5
    GIF = 6
    MP4 = 7
    MOV = 8
    M3U8 = 9
    TS = 10


CONTENT_TYPES: Final[dict[int, str]] = {
    Format.UNKNOWN: "application/octet-stream",
    Format.JPEG: "image/jpeg",
    Format.WEBP: "image/webp",
    Format.AVIF: "image/avif",
    Format.PNG: "image/png",
    Format.HEIC: "image/heic",
    Format.GIF: "image/gif",
    Format.MP4: "video/mp4",
    Format.MOV: "video/quicktime",
    Format.M3U8: "application/vnd.apple.mpegurl",
    Format.TS: "video/mp2t",
}

# One extension per format (one URL per variant); "bin" names the unknown format.
EXTENSIONS: Final[dict[int, str]] = {
    Format.UNKNOWN: "bin",
    Format.JPEG: "jpg",
    Format.WEBP: "webp",
    Format.AVIF: "avif",
    Format.PNG: "png",
    Format.HEIC: "heic",
    Format.GIF: "gif",
    Format.MP4: "mp4",
    Format.MOV: "mov",
    Format.M3U8: "m3u8",
    Format.TS: "ts",
}
FORMAT_OF_EXTENSION: Final[dict[str, Format]] = {
    ext: Format(fmt) for fmt, ext in EXTENSIONS.items()
}

# The formats a negotiated URL chooses among, best first (smallest bytes for the quality).
NEGOTIATED_FORMATS: Final[tuple[Format, ...]] = (
    Format.AVIF,
    Format.WEBP,
    Format.JPEG,
    Format.PNG,
    Format.GIF,
    Format.HEIC,
)

# Formats every image client decodes: a wildcard (image/*, */*) in Accept vouches for them.
# The others are preferred only when Accept names them: old browsers send image/* without
# decoding webp or avif, so a wildcard alone ranks those after every named format.
_WILDCARD_SAFE: Final[frozenset[int]] = frozenset((Format.JPEG, Format.PNG, Format.GIF))

# -- field widths ------------------------------------------------------------------------

FMT_BITS: Final = 8
RENDITION_BITS: Final = 24
ALT_KEY_BITS: Final = RENDITION_BITS + FMT_BITS
FMT_MAX: Final = (1 << FMT_BITS) - 1
RENDITION_MAX: Final = (1 << RENDITION_BITS) - 1
ALT_KEY_MAX: Final = (1 << ALT_KEY_BITS) - 1
ORIGINAL_RENDITION: Final = 0
VOLUME_ID_MIN: Final = 1
VOLUME_ID_MAX: Final = 2**32 - 1
KEY_MAX: Final = 2**64 - 1
COOKIE_MAX: Final = 2**64 - 1
COOKIE_HEX_DIGITS: Final = 16

assert ALT_KEY_BITS == 32, "alt keys are the needle's u32"
assert max(CONTENT_TYPES) <= FMT_MAX and set(CONTENT_TYPES) == set(EXTENSIONS)
assert len(FORMAT_OF_EXTENSION) == len(EXTENSIONS), "one extension per format"
assert set(NEGOTIATED_FORMATS) <= set(CONTENT_TYPES)

# -- Accept parsing limits -----------------------------------------------------------------

ACCEPT_BYTES_MAX: Final = 4096  # longer Accept headers are judged on their first 4 KiB
ACCEPT_RANGES_MAX: Final = 64  # media ranges beyond this are ignored


class PhotoPathError(ValueError):
    """A path that is not a canonical photo URL; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class PhotoRef:
    """What a photo URL names. fmt is None for a negotiated URL."""

    volume_id: int
    key: int
    cookie: int
    rendition: int
    fmt: Format | None = None

    def alt_key(self, fmt: int) -> int:
        return alt_key(self.rendition, fmt)


def alt_key(rendition: int, fmt: int) -> int:
    """The needle alt key of one variant: rendition << 8 | fmt."""
    if not 0 <= rendition <= RENDITION_MAX:
        raise ValueError(f"rendition must be within 0..{RENDITION_MAX}")
    if not 0 <= fmt <= FMT_MAX:
        raise ValueError(f"format code must be within 0..{FMT_MAX}")
    return rendition << FMT_BITS | fmt


def split_alt(alt: int) -> tuple[int, int]:
    """(rendition, fmt) of an alt key."""
    if not 0 <= alt <= ALT_KEY_MAX:
        raise ValueError(f"alt key must be within 0..{ALT_KEY_MAX}")
    return alt >> FMT_BITS, alt & FMT_MAX


def content_type(fmt: int) -> str:
    """The Content-Type of a format code (application/octet-stream for codes not known)."""
    return CONTENT_TYPES.get(fmt, CONTENT_TYPES[Format.UNKNOWN])


def photo_path(vid: int, key: int, cookie: int, rendition: int, fmt: int | None = None) -> str:
    """The canonical photo URL path; negotiated when fmt is None."""
    if not VOLUME_ID_MIN <= vid <= VOLUME_ID_MAX:
        raise ValueError(f"volume id must be within {VOLUME_ID_MIN}..{VOLUME_ID_MAX}")
    if not 0 <= key <= KEY_MAX:
        raise ValueError(f"key must be within 0..{KEY_MAX}")
    if not 0 <= cookie <= COOKIE_MAX:
        raise ValueError(f"cookie must be within 0..{COOKIE_MAX}")
    if not 0 <= rendition <= RENDITION_MAX:
        raise ValueError(f"rendition must be within 0..{RENDITION_MAX}")
    path = f"/p/{vid}/{key}/{cookie:016x}/{rendition}"
    if fmt is None:
        return path
    ext = EXTENSIONS.get(fmt)
    if ext is None:
        raise ValueError(f"no URL extension for format code {fmt}")
    return f"{path}.{ext}"


_PHOTO_PATH: Final = re.compile(
    r"/p/([1-9][0-9]{0,9})/(0|[1-9][0-9]{0,19})/([0-9a-f]{16})/(0|[1-9][0-9]{0,7})"
    r"(?:\.([a-z0-9]{1,5}))?"
)


def parse_photo_path(path: str) -> PhotoRef:
    """The PhotoRef of a canonical photo URL path (no query string). Raises PhotoPathError
    with a message naming the offending part for anything else."""
    m = _PHOTO_PATH.fullmatch(path)
    if m is not None:  # the common case: one regex, then range checks
        vid, key, rendition = int(m[1]), int(m[2]), int(m[4])
        ext = m[5]
        fmt = None if ext is None else FORMAT_OF_EXTENSION.get(ext)
        if (
            vid <= VOLUME_ID_MAX
            and key <= KEY_MAX
            and rendition <= RENDITION_MAX
            and (ext is None or fmt is not None)
        ):
            return PhotoRef(vid, key, int(m[3], 16), rendition, fmt)
    _explain(path)
    raise AssertionError("unreachable: _explain raises")  # pragma: no cover


def _explain(path: str) -> None:
    """Raises the PhotoPathError that says what is wrong with `path`."""
    shape = "/p/{volume}/{key}/{cookie}/{rendition}[.{ext}]"
    parts = path.split("/")
    if len(parts) != 6 or parts[0] != "" or parts[1] != "p":
        raise PhotoPathError(f"a photo URL is {shape}")
    _, _, vid_s, key_s, cookie_s, last = parts
    vid = _decimal(vid_s, "volume")
    if not VOLUME_ID_MIN <= vid <= VOLUME_ID_MAX:
        raise PhotoPathError(f"volume must be within {VOLUME_ID_MIN}..{VOLUME_ID_MAX}")
    if _decimal(key_s, "key") > KEY_MAX:
        raise PhotoPathError(f"key must be within 0..{KEY_MAX}")
    if len(cookie_s) != COOKIE_HEX_DIGITS or not all(c in "0123456789abcdef" for c in cookie_s):
        raise PhotoPathError(f"cookie must be {COOKIE_HEX_DIGITS} lower-case hex digits")
    rendition_s, dot, ext = last.partition(".")
    if _decimal(rendition_s, "rendition") > RENDITION_MAX:
        raise PhotoPathError(f"rendition must be within 0..{RENDITION_MAX}")
    if dot and ext not in FORMAT_OF_EXTENSION:
        known = ", ".join(sorted(FORMAT_OF_EXTENSION))
        raise PhotoPathError(f"unknown extension {ext[:16]!r} (one of: {known})")
    raise PhotoPathError(f"a photo URL is {shape}")  # pragma: no cover - regex and this agree


def _decimal(text: str, what: str) -> int:
    # isdigit() alone takes non-ASCII digits; int() alone takes "+5", " 5" and "5_0".
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        raise PhotoPathError(f"{what} must be a decimal number without leading zeros")
    if len(text) > 20:
        raise PhotoPathError(f"{what} is out of range")
    return int(text)


# -- Accept negotiation --------------------------------------------------------------------


def formats_for_accept(
    accept: str | None, available: tuple[Format, ...] = NEGOTIATED_FORMATS
) -> tuple[Format, ...]:
    """The formats of `available` the client accepts, best first.

    `available` is in the server's order of preference. Each format gets the q-value of the
    most specific media range matching it (type/subtype over type/* over */*, RFC 9110
    §12.5.1); q=0 excludes it. Order: formats named explicitly or safe under a wildcard
    (jpeg, png, gif) before formats that only a wildcard matches; then higher q first;
    then the server's order. No Accept header accepts everything. An empty answer means
    nothing acceptable (406).
    """
    if accept is None or not accept.strip():
        return available
    ranges = _parse_accept(accept[:ACCEPT_BYTES_MAX])
    ranked: list[tuple[int, float, int, Format]] = []
    for order, fmt in enumerate(available):
        mime = CONTENT_TYPES.get(fmt)
        if mime is None:
            continue
        major = mime.partition("/")[0]
        q = ranges.get(mime)
        named = q is not None
        if q is None:
            q = ranges.get(f"{major}/*")
            if q is None:
                q = ranges.get("*/*")
        if q is None or q <= 0.0:
            continue
        trusted = named or fmt in _WILDCARD_SAFE
        ranked.append((0 if trusted else 1, -q, order, fmt))
    ranked.sort()
    return tuple(fmt for *_, fmt in ranked)


def _parse_accept(accept: str) -> dict[str, float]:
    """media range (lower case, parameters other than q dropped) -> q. A range listed twice
    keeps its highest q; a malformed q makes the range count as q=1 (lenient, like most
    servers); a range without a "/" is ignored."""
    ranges: dict[str, float] = {}
    for item in accept.split(",", ACCEPT_RANGES_MAX)[:ACCEPT_RANGES_MAX]:
        mime, _, params = item.partition(";")
        mime = mime.strip().lower()
        if "/" not in mime:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 1.0
                if q != q:  # NaN
                    q = 0.0
                break
        if ranges.get(mime, -1.0) < q:
            ranges[mime] = q
    return ranges
