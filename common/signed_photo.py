"""Signed, expiring photo URLs: how private photos travel (docs/api/router.md).

A public photo URL (common/photo.py) carries the needle's cookie and works for ever: right
for public posts, which caches everywhere may keep. A private account's photo, and every
story, is handed out only as a signed URL:

    /p/{volume}/{key}/{masked cookie}/{rendition}[.{ext}]?e={expiry}&s={signature}

expiry     Unix seconds, canonical decimal; the router refuses the URL after it (403)
signature  22 characters: URL-safe base64 (unpadded) of the first 16 bytes of
           HMAC-SHA256(url key, "p1|" path "|" expiry), the path being everything before "?"
masked     the cookie XOR the first 8 bytes of HMAC-SHA256(url key, "m1|" volume "|" key
           "|" expiry): the real cookie never appears in a signed URL, so dropping the query
           does not leave a public URL that works (it names a cookie no needle has)

The router checks a signed URL without the metadata database and answers it with
`Cache-Control: private` for at most its remaining lifetime; an unfollow, a block or a
switch to private therefore takes effect for every URL handed out before it within
`signed_url_ttl_s` plus `signed_url_step_s` (expiries are rounded up to a step so that one
viewer's URLs stay the same, and browser-cached, for a while).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Final

from common.photo import PhotoPathError, PhotoRef, parse_photo_path, photo_path

SIGNATURE_BYTES: Final = 16
SIGNATURE_CHARS: Final = 22  # base64 of 16 bytes, unpadded
MASK_BYTES: Final = 8
EXPIRY_DIGITS_MAX: Final = 12  # Unix seconds until the year 33658
URL_KEY_BYTES: Final = 32

assert len(base64.urlsafe_b64encode(bytes(SIGNATURE_BYTES)).rstrip(b"=")) == SIGNATURE_CHARS


class SignedUrlError(ValueError):
    """A signed photo URL that is malformed, forged or expired; `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _signature(key: bytes, path: str, expiry: int) -> str:
    mac = hmac.new(key, b"p1|%s|%d" % (path.encode("ascii"), expiry), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:SIGNATURE_BYTES]).rstrip(b"=").decode()


def _mask(key: bytes, volume_id: int, photo_key: int, expiry: int) -> int:
    mac = hmac.new(key, b"m1|%d|%d|%d" % (volume_id, photo_key, expiry), hashlib.sha256)
    return int.from_bytes(mac.digest()[:MASK_BYTES], "big")


def expiry_for(now: float, *, ttl_s: float, step_s: int) -> int:
    """The expiry of URLs handed out at `now`: now + ttl_s rounded up to a multiple of step_s
    (whole seconds, >= 1), so a viewer gets the same URLs for step_s and caches them."""
    step = max(1, step_s)
    return math.ceil((now + ttl_s) / step) * step


def signed_path(
    key: bytes,
    volume_id: int,
    photo_key: int,
    cookie: int,
    rendition: int,
    fmt: int | None,
    *,
    expiry: int,
) -> str:
    """The signed URL path (with its query) of a photo variant."""
    masked = cookie ^ _mask(key, volume_id, photo_key, expiry)
    path = photo_path(volume_id, photo_key, masked, rendition, fmt)
    return f"{path}?e={expiry}&s={_signature(key, path, expiry)}"


@dataclass(frozen=True, slots=True)
class SignedPhoto:
    """A checked signed URL: the photo it names (real cookie) and when it expires."""

    ref: PhotoRef
    expiry: int


def verify(key: bytes, path: str, query: str, *, now: float) -> SignedPhoto:
    """The photo a signed URL names. Raises PhotoPathError for a path that is no photo URL
    and SignedUrlError (code bad_signature or url_expired) for the rest."""
    ref = parse_photo_path(path)
    expiry, signature = _parse_query(query)
    expected = _signature(key, path, expiry)
    if not hmac.compare_digest(signature.encode("ascii"), expected.encode("ascii")):
        raise SignedUrlError("bad_signature", "the URL's signature does not match")
    if expiry < now:
        raise SignedUrlError("url_expired", "this photo URL has expired; ask the API for a new one")
    cookie = ref.cookie ^ _mask(key, ref.volume_id, ref.key, expiry)
    real = PhotoRef(ref.volume_id, ref.key, cookie, ref.rendition, ref.fmt)
    return SignedPhoto(real, expiry)


def sign_playlist(key: bytes, text: bytes, *, expiry: int) -> bytes:
    """An HLS playlist served through a signed URL, with every photo URL in it (rung
    playlists, segments: root-relative /p/ paths, one per line) signed with the same expiry,
    so a private video's playlist never reveals its cookie. Other lines pass unchanged."""
    out = []
    for line in text.split(b"\n"):
        stripped = line.rstrip(b"\r")
        if stripped.startswith(b"/p/"):
            try:
                ref = parse_photo_path(stripped.decode("ascii"))
            except (PhotoPathError, UnicodeDecodeError):
                out.append(line)
                continue
            signed = signed_path(
                key, ref.volume_id, ref.key, ref.cookie, ref.rendition, ref.fmt, expiry=expiry
            )
            line = signed.encode("ascii") + line[len(stripped) :]
        out.append(line)
    return b"\n".join(out)


def is_signed(query: str) -> bool:
    """Whether a photo request's query string is (or tries to be) a signed URL's: it has an
    "e" or an "s" parameter. Any other query is not ours and is ignored (cache busters)."""
    return query.startswith(("e=", "s=")) or "&e=" in query or "&s=" in query


def _parse_query(query: str) -> tuple[int, str]:
    """(expiry, signature) of exactly "e={digits}&s={22 chars}"; one URL per variant."""
    e_part, amp, s_part = query.partition("&")
    if not amp or not e_part.startswith("e=") or not s_part.startswith("s="):
        raise SignedUrlError("bad_signature", "a signed photo URL ends in ?e={expiry}&s={sig}")
    digits, signature = e_part[2:], s_part[2:]
    if (
        not (digits.isascii() and digits.isdigit())
        or len(digits) > EXPIRY_DIGITS_MAX
        or (len(digits) > 1 and digits[0] == "0")
    ):
        raise SignedUrlError("bad_signature", "the expiry must be Unix seconds")
    if len(signature) != SIGNATURE_CHARS or not signature.isascii():
        raise SignedUrlError("bad_signature", f"the signature must be {SIGNATURE_CHARS} characters")
    return int(digits), signature


__all__ = [
    "PhotoPathError",
    "SignedPhoto",
    "SignedUrlError",
    "expiry_for",
    "is_signed",
    "sign_playlist",
    "signed_path",
    "verify",
]
