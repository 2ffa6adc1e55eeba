"""Reading a needle: one read of the whole needle, then every check before a byte is served.

The map gives (offset, length); one read fetches header, data and footer together. Checks
(store/needle.verify_read): magic, size and checksum (CorruptNeedle: the bytes are bad,
never served), the header names the (key, alt_key) asked for (CorruptNeedle: the index and
the file disagree), not deleted, and the cookie (NeedleNotFound: a wrong cookie answers exactly
like an absent needle).

The internal read (replica repair, no cookie in hand) runs the same checks with the cookie
taken from the needle's own header: `checked(raw, ..., cookie=stored_cookie(raw))`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from store import needle
from store.errors import NeedleNotFound
from store.volume import UNIT, Generation, Volume


class NeedleRead(NamedTuple):
    """A verified needle: its raw bytes as read, where its data ends, its checksum."""

    raw: bytes | bytearray
    data_size: int
    checksum: int
    offset: int

    @property
    def data(self) -> memoryview:
        return memoryview(self.raw)[needle.HEADER_BYTES : needle.HEADER_BYTES + self.data_size]


def locate_pinned(volume: Volume, key: int, alt_key: int) -> tuple[Generation, int, int]:
    """(generation, offset, length) of the needle, the generation pinned: the caller must
    unpin it once its read is done. Raises NeedleNotFound."""
    gen = volume.pin_generation()
    loc = gen.map.get(key, alt_key)
    if loc is None:
        gen.unpin()
        raise NeedleNotFound("no such needle")
    return gen, loc[0] * UNIT, loc[1] * UNIT


def checked(
    raw: bytes | bytearray, *, key: int, alt_key: int, cookie: int, offset: int, length: int
) -> NeedleRead:
    size, checksum = needle.verify_read(
        raw, key=key, alt_key=alt_key, cookie=cookie, length=length, offset=offset
    )
    return NeedleRead(raw, size, checksum, offset)


COOKIE_OFFSET: Final = needle.MAGIC_BYTES + needle.FLAGS_BYTES + needle.HEADER_RESERVED_BYTES


def stored_cookie(raw: bytes | bytearray) -> int:
    """The cookie in a needle's header (unchecked: pass it to checked(), which verifies the
    checksum that covers it)."""
    return int.from_bytes(raw[COOKIE_OFFSET : COOKIE_OFFSET + needle.COOKIE_BYTES], "little")


def read_cached(volume: Volume, key: int, alt_key: int, cookie: int) -> NeedleRead | None:
    """Serves the needle if its bytes are in the page cache, without ever waiting for the
    device; None means "read it from the device" (read(), or the node's device reader).
    Raises NeedleNotFound and CorruptNeedle."""
    gen, offset, length = locate_pinned(volume, key, alt_key)
    try:
        raw = gen.file.read_nowait(length, offset)
    finally:
        gen.unpin()
    if raw is None:
        return None
    return checked(raw, key=key, alt_key=alt_key, cookie=cookie, offset=offset, length=length)


def read(volume: Volume, key: int, alt_key: int, cookie: int) -> NeedleRead:
    """Blocking read of one needle. Raises NeedleNotFound, CorruptNeedle or OSError."""
    gen, offset, length = locate_pinned(volume, key, alt_key)
    try:
        raw = gen.file.read(length, offset)
    finally:
        gen.unpin()
    return checked(raw, key=key, alt_key=alt_key, cookie=cookie, offset=offset, length=length)
