"""Needles: one stored blob with its header, footer and checksum (format v1).

A needle, little-endian, starting at an offset that is a multiple of the volume's offset
unit (NEEDLE_ALIGNMENT_BYTES):

    0        4     5          8        16       24        28         32
    +--------+-----+----------+--------+--------+---------+----------+
    | magic  |flags| reserved | cookie |  key   | alt_key |data_size |   header, 32 bytes
    | "NEDL" | u8  | 3 x 0    |  u64   |  u64   |   u32   |   u32    |
    +--------+-----+----------+--------+--------+---------+----------+
    | data: data_size bytes                                          |
    +--------+----------+----------+---------------------------------+
    | magic  | reserved | checksum |                                    footer, 16 bytes
    | "LDEN" | 4 x 0    |   u64    |
    +--------+----------+----------+
    | zero padding up to the next multiple of NEEDLE_ALIGNMENT_BYTES |
    +-----------------------------------------------------------------+

checksum = xxh3_64(data, seed=xxh3_64(header[4:32] with the DELETED bit cleared)).
The DELETED flag is left out so that a delete can set it in place without rewriting the
needle; everything else in the header, the data and the other flags are covered.

docs/formats/volume.md is the same layout as a table; keep the two in step.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import xxhash

from store.errors import CorruptNeedle, NeedleNotFound

HEADER_MAGIC: Final = b"NEDL"
FOOTER_MAGIC: Final = b"LDEN"

FLAG_DELETED: Final = 0x01  # set in place on the original needle by a delete
FLAG_TOMBSTONE: Final = 0x02  # this record is the durable delete of (key, alt_key)
FLAGS_KNOWN: Final = FLAG_DELETED | FLAG_TOMBSTONE

MAGIC_BYTES: Final = 4
FLAGS_BYTES: Final = 1
HEADER_RESERVED_BYTES: Final = 3
COOKIE_BYTES: Final = 8
KEY_BYTES: Final = 8
ALT_KEY_BYTES: Final = 4
SIZE_BYTES: Final = 4
FOOTER_RESERVED_BYTES: Final = 4
CHECKSUM_BYTES: Final = 8

HEADER_BYTES: Final = (
    MAGIC_BYTES
    + FLAGS_BYTES
    + HEADER_RESERVED_BYTES
    + COOKIE_BYTES
    + KEY_BYTES
    + ALT_KEY_BYTES
    + SIZE_BYTES
)
FOOTER_BYTES: Final = MAGIC_BYTES + FOOTER_RESERVED_BYTES + CHECKSUM_BYTES
FLAGS_OFFSET: Final = MAGIC_BYTES  # where a delete writes FLAG_DELETED in place
CHECKSUMMED_HEADER_START: Final = MAGIC_BYTES  # flags onwards

# Needle starts (and so every offset in the needle map) are multiples of this. It is also
# the volume's offset unit: 32-bit offsets in these units reach 128 GiB per volume.
NEEDLE_ALIGNMENT_BYTES: Final = 32

KEY_MAX: Final = 2**64 - 1
ALT_KEY_MAX: Final = 2**32 - 1
COOKIE_MAX: Final = 2**64 - 1
# The needle map keeps lengths in 24 bits of alignment units: 512 MiB per needle at most.
NEEDLE_LENGTH_UNITS_MAX: Final = 2**24 - 1
DATA_BYTES_MAX: Final = (
    NEEDLE_LENGTH_UNITS_MAX * NEEDLE_ALIGNMENT_BYTES - HEADER_BYTES - FOOTER_BYTES
)

_HEADER = struct.Struct("<4sB3xQQII")
_FOOTER = struct.Struct("<4sIQ")

# Pair checks at import: the packed structs are exactly the documented sizes.
assert _HEADER.size == HEADER_BYTES == 32, _HEADER.size
assert _FOOTER.size == FOOTER_BYTES == 16, _FOOTER.size
assert NEEDLE_ALIGNMENT_BYTES % 8 == 0
assert HEADER_BYTES % 8 == 0 and FOOTER_BYTES % 8 == 0


def needle_length(data_size: int) -> int:
    """Total bytes a needle with `data_size` bytes of data occupies, padding included."""
    raw = HEADER_BYTES + data_size + FOOTER_BYTES
    return -(-raw // NEEDLE_ALIGNMENT_BYTES) * NEEDLE_ALIGNMENT_BYTES


def padding_length(data_size: int) -> int:
    return needle_length(data_size) - HEADER_BYTES - data_size - FOOTER_BYTES


_ZERO_PADDING = bytes(NEEDLE_ALIGNMENT_BYTES)


@dataclass(frozen=True, slots=True)
class NeedleHeader:
    flags: int
    cookie: int
    key: int
    alt_key: int
    data_size: int

    @property
    def deleted(self) -> bool:
        return bool(self.flags & FLAG_DELETED)

    @property
    def tombstone(self) -> bool:
        return bool(self.flags & FLAG_TOMBSTONE)

    @property
    def length(self) -> int:
        return needle_length(self.data_size)


def _checksum(header: bytes | bytearray | memoryview, data: bytes | bytearray | memoryview) -> int:
    covered = bytearray(header[CHECKSUMMED_HEADER_START:HEADER_BYTES])
    covered[0] &= ~FLAG_DELETED & 0xFF
    return xxhash.xxh3_64_intdigest(data, seed=xxhash.xxh3_64_intdigest(bytes(covered)))


def encode_parts(
    *, key: int, alt_key: int, cookie: int, data: bytes | bytearray | memoryview, flags: int = 0
) -> tuple[bytes, bytes]:
    """Returns (header, footer-with-padding). The needle is header + data + footer; kept
    apart so a large data buffer is written with writev and never copied."""
    if not 0 <= key <= KEY_MAX:
        raise ValueError(f"key out of range: {key}")
    if not 0 <= alt_key <= ALT_KEY_MAX:
        raise ValueError(f"alt_key out of range: {alt_key}")
    if not 0 <= cookie <= COOKIE_MAX:
        raise ValueError(f"cookie out of range: {cookie}")
    if flags & ~FLAGS_KNOWN:
        raise ValueError(f"unknown flags: {flags:#x}")
    size = len(data)
    if size > DATA_BYTES_MAX:
        raise ValueError(f"data of {size} bytes exceeds the format's {DATA_BYTES_MAX}")
    header = _HEADER.pack(HEADER_MAGIC, flags, cookie, key, alt_key, size)
    footer = _FOOTER.pack(FOOTER_MAGIC, 0, _checksum(header, data))
    return header, footer + _ZERO_PADDING[: padding_length(size)]


def encode(
    *, key: int, alt_key: int, cookie: int, data: bytes | bytearray | memoryview, flags: int = 0
) -> bytes:
    header, tail = encode_parts(key=key, alt_key=alt_key, cookie=cookie, data=data, flags=flags)
    return b"".join((header, data, tail))


def parse_header(buf: bytes | bytearray | memoryview, *, offset: int | None = None) -> NeedleHeader:
    """Parses and checks the 32 header bytes at the start of `buf` (magic, known flags,
    zero reserved bytes). Raises CorruptNeedle."""
    if len(buf) < HEADER_BYTES:
        raise CorruptNeedle("short needle header", offset=offset)
    magic, flags, cookie, key, alt_key, size = _HEADER.unpack_from(buf, 0)
    if magic != HEADER_MAGIC:
        raise CorruptNeedle("bad needle header magic", offset=offset)
    if flags & ~FLAGS_KNOWN:
        raise CorruptNeedle(f"unknown needle flags {flags:#x}", offset=offset)
    if size > DATA_BYTES_MAX:
        raise CorruptNeedle(f"needle data size {size} out of range", offset=offset)
    return NeedleHeader(flags=flags, cookie=cookie, key=key, alt_key=alt_key, data_size=size)


def verify(buf: bytes | bytearray | memoryview, *, offset: int | None = None) -> NeedleHeader:
    """Checks a whole needle read from disk: header, footer magic and checksum.

    `buf` must hold at least the needle's full length (padding may be missing at the very
    end of a file). Returns the header; raises CorruptNeedle when any check fails."""
    header = parse_header(buf, offset=offset)
    end_of_data = HEADER_BYTES + header.data_size
    footer_end = end_of_data + FOOTER_BYTES
    if len(buf) < footer_end:
        raise CorruptNeedle("needle runs past the bytes read", offset=offset)
    magic, reserved, checksum = _FOOTER.unpack_from(buf, end_of_data)
    if magic != FOOTER_MAGIC:
        raise CorruptNeedle("bad needle footer magic", offset=offset)
    if reserved:
        raise CorruptNeedle("nonzero reserved footer bytes", offset=offset)
    view = memoryview(buf)
    if checksum != _checksum(view[:HEADER_BYTES], view[HEADER_BYTES:end_of_data]):
        raise CorruptNeedle("needle checksum mismatch", offset=offset)
    return header


def verify_read(
    buf: bytes | bytearray, *, key: int, alt_key: int, cookie: int, length: int, offset: int
) -> tuple[int, int]:
    """The read path's check of a needle read whole from the map's (offset, length):
    integrity (magic, size, reserved bytes, checksum: CorruptNeedle), identity (the needle
    is the (key, alt_key) the map named: CorruptNeedle), then liveness and cookie (NeedleNotFound,
    so that a wrong cookie looks exactly like an absent needle).

    Returns (data_size, checksum). The same checks as verify(), without building objects:
    this runs once per photo served."""
    if len(buf) < length:
        raise CorruptNeedle("short read: the needle runs past the end of the file", offset=offset)
    magic, flags, stored_cookie, stored_key, stored_alt, size = _HEADER.unpack_from(buf, 0)
    if magic != HEADER_MAGIC or flags & ~FLAGS_KNOWN:
        raise CorruptNeedle("bad needle header", offset=offset)
    end = HEADER_BYTES + size
    if end + FOOTER_BYTES > length or needle_length(size) != length:
        raise CorruptNeedle("needle size does not match the index", offset=offset)
    footer_magic, reserved, checksum = _FOOTER.unpack_from(buf, end)
    if footer_magic != FOOTER_MAGIC or reserved:
        raise CorruptNeedle("bad needle footer", offset=offset)
    view = memoryview(buf)
    if flags & FLAG_DELETED:
        seed = xxhash.xxh3_64_intdigest(
            bytes([flags & ~FLAG_DELETED]) + bytes(view[5:HEADER_BYTES])
        )
    else:
        seed = xxhash.xxh3_64_intdigest(view[CHECKSUMMED_HEADER_START:HEADER_BYTES])
    if xxhash.xxh3_64_intdigest(view[HEADER_BYTES:end], seed=seed) != checksum:
        raise CorruptNeedle("needle checksum mismatch", offset=offset)
    if stored_key != key or stored_alt != alt_key:
        raise CorruptNeedle("the needle at the indexed offset is another one", offset=offset)
    if flags or stored_cookie != cookie:
        raise NeedleNotFound("no such needle")
    return size, checksum


def data_view(buf: bytes | bytearray | memoryview, header: NeedleHeader) -> memoryview:
    """The data bytes of a verified needle, without copying."""
    return memoryview(buf)[HEADER_BYTES : HEADER_BYTES + header.data_size]


def checksum_of(buf: bytes | bytearray | memoryview, header: NeedleHeader) -> int:
    """The stored checksum of a verified needle (used as a strong ETag)."""
    value: int = _FOOTER.unpack_from(buf, HEADER_BYTES + header.data_size)[2]
    return value
