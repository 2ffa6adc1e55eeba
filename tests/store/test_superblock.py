from __future__ import annotations

import pytest

from store import superblock
from store.errors import FormatError
from store.superblock import SUPERBLOCK_BYTES, Superblock


def test_round_trip_records_every_format_choice() -> None:
    sb = Superblock.new(42, 100 * 10**9).next_revision()
    raw = sb.encode()
    assert len(raw) == SUPERBLOCK_BYTES == 64
    back = superblock.decode(raw)
    assert back == sb
    assert (back.offset_unit_bytes, back.needle_header_bytes, back.needle_footer_bytes) == (
        32,
        32,
        16,
    )
    assert back.compaction_revision == 1


@pytest.mark.parametrize("pos", [0, 9, 12, 20, 40, 60])
def test_any_damage_is_a_format_error(pos: int) -> None:
    raw = bytearray(Superblock.new(1, 10**9).encode())
    raw[pos] ^= 0x10
    with pytest.raises(FormatError):
        superblock.decode(bytes(raw))


def test_short_file_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="too short"):
        superblock.decode(b"PNHLVOL1")


def test_size_limit_is_bounded_by_32_bit_offsets() -> None:
    superblock.check_size_limit(128 * 2**30 - 32)
    with pytest.raises(ValueError):
        superblock.check_size_limit(2**32 * 32)
    with pytest.raises(ValueError):
        superblock.check_size_limit(100)
