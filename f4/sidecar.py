"""Per-block checksums: one xxh3_64 per fixed chunk of a block, kept in a sidecar file.

Layout (little-endian; docs/formats/f4.md has the table):

    0       4        6          8             16             24
    | magic | version| reserved | chunk_bytes | block_length | chunk sums: u64 each ...
    | F4SC  |  u16   |  2 x 0   |  u32 + 4x0  |     u64      | | trailer: xxh3_64 of all before

Chunk i covers block bytes [i * chunk_bytes, (i + 1) * chunk_bytes) (the last may be short),
and its sum sits at HEADER_BYTES + 8 * i, so a read checks only the chunks it touches by
reading just their sums. The trailer covers the header and all sums (checked by a whole-file
load: scrub, rebuild).
"""

from __future__ import annotations

import array
import itertools
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

import xxhash

from f4.errors import BadBlockRequest, BlockCorrupt, F4FormatError
from store import native

MAGIC: Final = b"F4SC"
VERSION: Final = 1
CHUNK_BYTES: Final = 1024
HEADER_BYTES: Final = 24
SUM_BYTES: Final = 8
TRAILER_BYTES: Final = 8

_HEADER = struct.Struct("<4sH2xI4xQ")
assert _HEADER.size == HEADER_BYTES
assert array.array("Q").itemsize == SUM_BYTES  # sums are packed through an array of u64

Buffer = bytes | bytearray | memoryview
B = TypeVar("B", bound=bytes | bytearray)

_xxh3: Final = xxhash.xxh3_64_intdigest
# check_packed's whole comparison in one C call when the store's extension is built (and
# PINHOLE_STORE_NATIVE is not 0); None: chunk by chunk in Python.
_native = native.for_f4()
_native_match: Final = _native.chunk_sums_match if _native is not None else None


def chunk_count(block_length: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return -(-block_length // chunk_bytes)


def file_length(block_length: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return HEADER_BYTES + SUM_BYTES * chunk_count(block_length, chunk_bytes) + TRAILER_BYTES


def chunk_span(offset: int, length: int, chunk_bytes: int = CHUNK_BYTES) -> tuple[int, int]:
    """(first chunk, chunk count) covering [offset, offset + length)."""
    first = offset // chunk_bytes
    last = (offset + max(length, 1) - 1) // chunk_bytes
    return first, last - first + 1


def sums_of(data: Buffer, chunk_bytes: int = CHUNK_BYTES) -> list[int]:
    view = memoryview(data)
    return [
        xxhash.xxh3_64_intdigest(view[i : i + chunk_bytes])
        for i in range(0, len(view), chunk_bytes)
    ]


class SidecarBuilder:
    """Accumulates sums while a block is written in pieces (each a multiple of the chunk
    size, except the last)."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self.sums: list[int] = []
        self.length = 0

    def update(self, data: Buffer) -> None:
        if self.length % self.chunk_bytes:
            raise ValueError("only the last piece of a block may end off a chunk boundary")
        self.sums.extend(sums_of(data, self.chunk_bytes))
        self.length += len(data)

    def encode(self) -> bytes:
        return encode(self.sums, self.length, self.chunk_bytes)


def pack_sums(sums: Iterable[int]) -> bytes:
    """Sums as little-endian u64s, back to back."""
    packed = array.array("Q", sums)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def encode(sums: Iterable[int], block_length: int, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    body = _HEADER.pack(MAGIC, VERSION, chunk_bytes, block_length) + pack_sums(sums)
    return body + xxhash.xxh3_64_intdigest(body).to_bytes(TRAILER_BYTES, "little")


@dataclass(frozen=True, slots=True)
class Sidecar:
    chunk_bytes: int
    block_length: int
    sums: tuple[int, ...]

    def check(self, data: Buffer, offset: int = 0) -> None:
        """Raises BlockCorrupt unless `data`, read at `offset` (chunk-aligned, whole chunks
        or up to the block's end), matches the sums."""
        check_sums(data, offset, self.sums[offset // self.chunk_bytes :], self.chunk_bytes)


def decode(raw: Buffer) -> Sidecar:
    if len(raw) < HEADER_BYTES + TRAILER_BYTES:
        raise F4FormatError("short sidecar")
    magic, version, chunk_bytes, block_length = _HEADER.unpack_from(raw, 0)
    if magic != MAGIC or version != VERSION or chunk_bytes <= 0:
        raise F4FormatError("bad sidecar header")
    count = chunk_count(block_length, chunk_bytes)
    if len(raw) != HEADER_BYTES + SUM_BYTES * count + TRAILER_BYTES:
        raise F4FormatError("sidecar length does not match its block length")
    body = memoryview(raw)[: len(raw) - TRAILER_BYTES]
    trailer = int.from_bytes(raw[len(raw) - TRAILER_BYTES :], "little")
    if xxhash.xxh3_64_intdigest(body) != trailer:
        raise F4FormatError("sidecar checksum mismatch")
    sums = struct.unpack_from(f"<{count}Q", raw, HEADER_BYTES)
    return Sidecar(chunk_bytes, block_length, tuple(sums))


def sums_range(first: int, count: int) -> tuple[int, int]:
    """(offset, length) in the sidecar file of the sums of chunks [first, first + count)."""
    return HEADER_BYTES + SUM_BYTES * first, SUM_BYTES * count


def parse_sums(raw: Buffer) -> tuple[int, ...]:
    return struct.unpack(f"<{len(raw) // SUM_BYTES}Q", raw)


def chunk_sums(data: Buffer, chunk_bytes: int = CHUNK_BYTES) -> list[int]:
    """The xxh3_64 of each chunk of `data` (the last may be short): one C call per chunk
    through `map`, no Python loop body (this runs on every checked read)."""
    view = memoryview(data)
    return list(map(_xxh3, [view[i : i + chunk_bytes] for i in range(0, len(view), chunk_bytes)]))


def check_sums(data: Buffer, offset: int, sums: Iterable[int], chunk_bytes: int) -> None:
    """Raises BlockCorrupt unless every chunk of `data`, read at block offset `offset`
    (chunk-aligned), matches its sum in `sums` (which may go on past the data)."""
    if offset % chunk_bytes:
        raise ValueError("checked reads start on a chunk boundary")
    got = chunk_sums(data, chunk_bytes)
    want = list(itertools.islice(sums, len(got)))
    if got != want:
        _raise_first_mismatch(got, want, offset, chunk_bytes)


def check_packed(data: Buffer, offset: int, packed: Buffer, chunk_bytes: int) -> None:
    """check_sums against sums as the sidecar stores them (`pack_sums`: little-endian
    u64s, back to back, one per chunk of `data` exactly): the chunks' sums are packed and
    compared as bytes, not unpacked into ints one by one."""
    if offset % chunk_bytes:
        raise ValueError("checked reads start on a chunk boundary")
    if (
        _native_match is not None
        and len(packed) == SUM_BYTES * chunk_count(len(data), chunk_bytes)
        and _native_match(data, packed, chunk_bytes) < 0
    ):
        return
    check_packed_python(data, offset, packed, chunk_bytes)


def check_packed_python(data: Buffer, offset: int, packed: Buffer, chunk_bytes: int) -> None:
    """check_packed chunk by chunk in Python: without the C extension, and for the precise
    error of any mismatch the C call found."""
    got = chunk_sums(data, chunk_bytes)
    if pack_sums(got) != packed:
        whole = len(packed) - len(packed) % SUM_BYTES
        _raise_first_mismatch(
            got, list(parse_sums(memoryview(packed)[:whole])), offset, chunk_bytes
        )


def _raise_first_mismatch(got: list[int], want: list[int], offset: int, chunk_bytes: int) -> None:
    for i, digest in enumerate(got):
        if i >= len(want) or want[i] != digest:
            raise BlockCorrupt(
                f"checksum mismatch in the chunk at block offset {offset + i * chunk_bytes}"
            )
    raise BlockCorrupt(f"{len(want)} sums for {len(got)} chunks at block offset {offset}")


def checked_read_bytes(offset: int, length: int) -> int:
    """Bytes a checked read of [offset, offset + length) reads: the range and its sums."""
    return length + SUM_BYTES * chunk_span(offset, length)[1]


def read_checked(
    read_range: Callable[[str, int, int], B],
    size: Callable[[str], int],
    block: str,
    sidecar: str,
    offset: int,
    length: int,
) -> B:
    """Bytes [offset, offset + length) of `block`, checked against the sums of just the
    chunks they cover, read from `sidecar` at their offset: two exact reads through
    `read_range(name, offset, length)`, BlockCorrupt on a mismatch. The range starts on a
    chunk boundary and ends on one or at the block's end (`size(block)` is asked only for
    a range ending off a boundary), else BadBlockRequest: a short last chunk anywhere else
    would be compared with the sum of the whole chunk."""
    if offset % CHUNK_BYTES:
        raise BadBlockRequest(f"a checked range starts on a {CHUNK_BYTES}-byte boundary")
    if length % CHUNK_BYTES and size(block) != offset + length:
        raise BadBlockRequest(
            f"a checked range ends on a {CHUNK_BYTES}-byte boundary or at the block's end"
        )
    first, count = chunk_span(offset, length)
    sums_at, sums_length = sums_range(first, count)
    sums = read_range(sidecar, sums_at, sums_length)
    data = read_range(block, offset, length)
    check_packed(data, offset, sums, CHUNK_BYTES)
    return data
