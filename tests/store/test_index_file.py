from __future__ import annotations

import pytest

from store import index_file
from store.errors import FormatError
from store.needle_run import run_from_entries


def _checkpoint() -> index_file.IndexCheckpoint:
    entries = {(k << 32) | a: ((2 + k * 3 + a) << 24) | 3 for k in range(100) for a in range(3)}
    entries[(7 << 32) | 1] = 0  # a tombstone survives a checkpoint of a partial map
    return index_file.IndexCheckpoint(
        volume_id=9, compaction_revision=4, covered_bytes=123456 * 32, run=run_from_entries(entries)
    )


def test_round_trip() -> None:
    cp = _checkpoint()
    raw = b"".join(index_file.encode(cp))
    back = index_file.decode(raw)
    assert (back.volume_id, back.compaction_revision, back.covered_bytes) == (9, 4, 123456 * 32)
    assert list(back.run.iter_live()) == list(cp.run.iter_live())
    assert back.run.get(7, 1) == (0, 0)
    assert back.run.get(99, 2) == (2 + 99 * 3 + 2, 3)


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
