"""Reading a needle: one read of the whole needle, then every check before a byte is served.

The map gives (offset, length); one read fetches header, data and footer together. Checks:
magic and checksum (CorruptNeedle: the bytes are bad, never served), the header names the
(key, alt_key) asked for (CorruptNeedle: the index and the file disagree), not deleted, and
the cookie (NotFound: a wrong cookie answers exactly like an absent needle).
"""

from __future__ import annotations

from dataclasses import dataclass

from store import needle
from store.errors import CorruptNeedle, NotFound
from store.volume import UNIT, Volume


@dataclass(frozen=True, slots=True)
class NeedleRead:
    header: needle.NeedleHeader
    raw: bytes | bytearray  # the whole needle as read
    offset: int

    @property
    def data(self) -> memoryview:
        return needle.data_view(self.raw, self.header)

    @property
    def checksum(self) -> int:
        return needle.checksum_of(self.raw, self.header)


def check(
    raw: bytes | bytearray, *, key: int, alt_key: int, cookie: int, offset: int, length: int
) -> NeedleRead:
    if len(raw) < length:
        raise CorruptNeedle("short read: the needle runs past the end of the file", offset=offset)
    header = needle.verify(raw, offset=offset)
    if header.key != key or header.alt_key != alt_key or header.length != length:
        raise CorruptNeedle("the needle at the indexed offset is another one", offset=offset)
    if header.deleted or header.tombstone or header.cookie != cookie:
        raise NotFound("no such needle")
    return NeedleRead(header, raw, offset)


def read_cached(volume: Volume, key: int, alt_key: int, cookie: int) -> NeedleRead | None:
    """Serves the needle if its bytes are in the page cache, without ever waiting for the
    device; None means "do the blocking read() on an executor thread". Raises NotFound and
    CorruptNeedle."""
    gen = volume.pin_generation()
    try:
        loc = gen.map.get(key, alt_key)
        if loc is None:
            raise NotFound("no such needle")
        offset, length = loc[0] * UNIT, loc[1] * UNIT
        raw = gen.file.read_nowait(length, offset)
    finally:
        gen.unpin()
    if raw is None:
        return None
    return check(raw, key=key, alt_key=alt_key, cookie=cookie, offset=offset, length=length)


def read(volume: Volume, key: int, alt_key: int, cookie: int) -> NeedleRead:
    """Blocking read of one needle. Raises NotFound, CorruptNeedle or OSError."""
    gen = volume.pin_generation()
    try:
        loc = gen.map.get(key, alt_key)
        if loc is None:
            raise NotFound("no such needle")
        offset, length = loc[0] * UNIT, loc[1] * UNIT
        raw = gen.file.read(length, offset)
    finally:
        gen.unpin()
    return check(raw, key=key, alt_key=alt_key, cookie=cookie, offset=offset, length=length)
