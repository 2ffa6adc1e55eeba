"""The superblock: the first 64 bytes of every volume file. It records every choice a
reader needs to parse the rest of the file, so that no format variant hides in code.

    0          8        10          12         16              24             32
    +----------+--------+-----------+----------+---------------+--------------+
    |  magic   |version |offset_unit| volume_id|size_bytes_max |created_unix_ns|
    |"PNHLVOL1"|  u16   |   u16     |   u32    |     u64       |     u64      |
    +----------+--------+-----------+----------+---------------+--------------+
    32         34       35          36         37               56            64
    +----------+--------+-----------+----------+----------------+-------------+
    |compaction|checksum|needle_hdr |needle_ftr|   reserved     |  checksum   |
    | revision | algo u8| bytes u8  | bytes u8 |  19 x 0        |xxh3_64[0:56)|
    |   u16    |        |           |          |                |             |
    +----------+--------+-----------+----------+----------------+-------------+

All integers little-endian. Needles start at byte 64 (a multiple of offset_unit).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, replace
from typing import Final

import xxhash

from store import needle
from store.errors import FormatError

MAGIC: Final = b"PNHLVOL1"
FORMAT_VERSION: Final = 1
CHECKSUM_XXH3_64: Final = 1
SUPERBLOCK_BYTES: Final = 64
# 32-bit needle offsets in offset units bound the size of one volume.
OFFSET_UNITS_MAX: Final = 2**32 - 1

_LAYOUT = struct.Struct("<8sHHIQQHBBB19x")
_CHECKSUM = struct.Struct("<Q")
assert _LAYOUT.size + _CHECKSUM.size == SUPERBLOCK_BYTES
assert SUPERBLOCK_BYTES % needle.NEEDLE_ALIGNMENT_BYTES == 0


@dataclass(frozen=True, slots=True)
class Superblock:
    volume_id: int
    size_bytes_max: int
    created_unix_ns: int
    compaction_revision: int = 0
    format_version: int = FORMAT_VERSION
    offset_unit_bytes: int = needle.NEEDLE_ALIGNMENT_BYTES
    checksum_algorithm: int = CHECKSUM_XXH3_64
    needle_header_bytes: int = needle.HEADER_BYTES
    needle_footer_bytes: int = needle.FOOTER_BYTES

    @staticmethod
    def new(volume_id: int, size_bytes_max: int) -> Superblock:
        check_size_limit(size_bytes_max)
        if not 0 <= volume_id < 2**32:
            raise ValueError(f"volume id out of range: {volume_id}")
        return Superblock(
            volume_id=volume_id, size_bytes_max=size_bytes_max, created_unix_ns=time.time_ns()
        )

    def next_revision(self) -> Superblock:
        return replace(self, compaction_revision=(self.compaction_revision + 1) % 2**16)

    def encode(self) -> bytes:
        body = _LAYOUT.pack(
            MAGIC,
            self.format_version,
            self.offset_unit_bytes,
            self.volume_id,
            self.size_bytes_max,
            self.created_unix_ns,
            self.compaction_revision,
            self.checksum_algorithm,
            self.needle_header_bytes,
            self.needle_footer_bytes,
        )
        return body + _CHECKSUM.pack(xxhash.xxh3_64_intdigest(body))


def check_size_limit(size_bytes_max: int) -> None:
    smallest = SUPERBLOCK_BYTES + needle.needle_length(0)
    largest = OFFSET_UNITS_MAX * needle.NEEDLE_ALIGNMENT_BYTES
    if not smallest <= size_bytes_max <= largest:
        raise ValueError(f"volume size limit must be within [{smallest}, {largest}] bytes")


def decode(buf: bytes) -> Superblock:
    """Parses and checks a superblock; raises FormatError for anything this code cannot read."""
    if len(buf) < SUPERBLOCK_BYTES:
        raise FormatError("file too short for a superblock")
    body = buf[: _LAYOUT.size]
    (stored,) = _CHECKSUM.unpack_from(buf, _LAYOUT.size)
    if body[:8] != MAGIC:
        raise FormatError("not a pinhole volume (bad superblock magic)")
    if stored != xxhash.xxh3_64_intdigest(body):
        raise FormatError("superblock checksum mismatch")
    (_, version, unit, vid, size_max, created, revision, algo, hdr, ftr) = _LAYOUT.unpack(body)
    if version != FORMAT_VERSION:
        raise FormatError(f"volume format version {version} is not supported")
    if (unit, algo, hdr, ftr) != (
        needle.NEEDLE_ALIGNMENT_BYTES,
        CHECKSUM_XXH3_64,
        needle.HEADER_BYTES,
        needle.FOOTER_BYTES,
    ):
        raise FormatError(
            f"unsupported needle layout: unit={unit} checksum={algo} header={hdr} footer={ftr}"
        )
    return Superblock(
        volume_id=vid,
        size_bytes_max=size_max,
        created_unix_ns=created,
        compaction_revision=revision,
        format_version=version,
        offset_unit_bytes=unit,
        checksum_algorithm=algo,
        needle_header_bytes=hdr,
        needle_footer_bytes=ftr,
    )
