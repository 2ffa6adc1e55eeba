from __future__ import annotations

import pytest
import xxhash

from store import index_file
from store.errors import FormatError
from store.needle_run import run_from_entries

# Alt keys a byte holds (a version 1 file), and a photo ladder's (a version 2 file: u8
# codes into the run's table of its distinct alt keys).
SMALL_ALTS = (0, 1, 2)
LADDER_ALTS = (0, (1080 << 8) | 3, ((10_000 + 150) << 8) | 1)


def _checkpoint(alts: tuple[int, ...] = SMALL_ALTS) -> index_file.IndexCheckpoint:
    entries = {
        (k << 32) | alts[a]: ((2 + k * 3 + a) << 24) | 3 for k in range(100) for a in range(3)
    }
    entries[(7 << 32) | alts[1]] = 0  # a tombstone survives a checkpoint of a partial map
    return index_file.IndexCheckpoint(
        volume_id=9, compaction_revision=4, covered_bytes=123456 * 32, run=run_from_entries(entries)
    )


@pytest.mark.parametrize(("alts", "version"), [(SMALL_ALTS, 1), (LADDER_ALTS, 2)])
def test_round_trip(alts: tuple[int, ...], version: int) -> None:
    cp = _checkpoint(alts)
    raw = b"".join(index_file.encode(cp))
    assert int.from_bytes(raw[8:10], "little") == version
    back = index_file.decode(raw)
    assert (back.volume_id, back.compaction_revision, back.covered_bytes) == (9, 4, 123456 * 32)
    assert list(back.run.iter_live()) == list(cp.run.iter_live())
    assert back.run.get(7, alts[1]) == (0, 0)
    assert back.run.get(99, alts[2]) == (2 + 99 * 3 + 2, 3)
    assert back.run.get(99, 5) is None
    assert back.run.alts.dtype.itemsize == 1
    assert (back.run.alt_table is None) == (version == 1)


def test_an_alt_code_past_the_table_is_a_format_error() -> None:
    cp = _checkpoint(LADDER_ALTS)
    raw = bytearray(b"".join(index_file.encode(cp)))
    # The header claims a table of 2 keys where the codes reach 2 (checksum made again).
    raw[19:21] = (2).to_bytes(2, "little")
    table_bytes = 3 * 4 + 4  # the table and its padding: one key fewer, same padding
    raw = raw[: len(raw) - table_bytes] + (LADDER_ALTS[0]).to_bytes(4, "little") + bytes(4)
    raw[48:56] = xxhash.xxh3_64_intdigest(bytes(raw[64:])).to_bytes(8, "little")
    raw[56:64] = xxhash.xxh3_64_intdigest(bytes(raw[:56])).to_bytes(8, "little")
    with pytest.raises(FormatError, match="alt code past the alt table"):
        index_file.decode(bytes(raw))


@pytest.mark.parametrize("pos", [0, 10, 30, 50, 70, 500, -1])
def test_damage_anywhere_is_a_format_error(pos: int) -> None:
    raw = bytearray(b"".join(index_file.encode(_checkpoint())))
    raw[pos] ^= 0x01
    with pytest.raises(FormatError):
        index_file.decode(bytes(raw))


def test_truncated_index_is_a_format_error() -> None:
    raw = b"".join(index_file.encode(_checkpoint()))
    with pytest.raises(FormatError):
        index_file.decode(raw[:-7])
    with pytest.raises(FormatError):
        index_file.decode(raw[:20])
