from __future__ import annotations

import threading
import time

import pytest

from common import ids


def test_ids_increase_and_carry_time_and_shard() -> None:
    gen = ids.IdGenerator(shard=37)
    before_ms = time.time_ns() // 1_000_000
    made = [gen.next_id() for _ in range(5000)]  # more than one millisecond's sequence
    after_ms = time.time_ns() // 1_000_000
    assert made == sorted(made) and len(set(made)) == len(made)
    for value in (made[0], made[-1]):
        assert before_ms <= ids.created_unix_ms(value) <= after_ms
        assert (value >> ids.SEQUENCE_BITS) & ids.SHARD_MAX == 37


def test_ids_are_unique_across_threads() -> None:
    gen = ids.IdGenerator(shard=1)
    out: list[list[int]] = [[] for _ in range(4)]

    def make(i: int) -> None:
        out[i].extend(gen.next_id() for _ in range(3000))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [v for part in out for v in part]
    assert len(set(every)) == 12000


def test_compose_and_parse_bounds() -> None:
    assert ids.compose(1, 2, 3) == (1 << 23) | (2 << 10) | 3
    with pytest.raises(ValueError):
        ids.compose(0, ids.SHARD_MAX + 1, 0)
    with pytest.raises(ValueError):
        ids.IdGenerator(shard=-1)
    assert ids.parse("12345") == 12345
    for bad in ("", "-1", " 1", "1.0", "0x10", str(ids.ID_MAX + 1), "١٢"):
        with pytest.raises(ValueError):
            ids.parse(bad)


def test_parse_stops_at_what_a_bigint_holds() -> None:
    assert ids.ID_MAX == 2**63 - 1
    assert ids.parse("9223372036854775807") == 2**63 - 1
    assert ids.parse("0") == 0
    # One spelling per id: a leading zero, a sign or a space is not an id.
    for bad in ("0009", "+9", " 9", "9 ", "٩", "9223372036854775808", "18446744073709551615",
                "1" * 20, "9" * 5000):  # fmt: skip
        with pytest.raises(ValueError):
            ids.parse(bad)


def test_parse_decimal_is_canonical_and_bounded() -> None:
    assert ids.parse_decimal("4294967295", maximum=2**32 - 1) == 2**32 - 1
    for bad in ("4294967296", "04", "", "-1", "1e3", "9" * 10_000):
        with pytest.raises(ValueError, match="volume"):
            ids.parse_decimal(bad, maximum=2**32 - 1, what="volume")


def test_ids_made_until_2060_fit_a_bigint() -> None:
    last_ms_below = (1 << (ids.TIME_BITS - 1)) - 1
    assert ids.compose(last_ms_below, ids.SHARD_MAX, ids.SEQUENCE_MAX) == ids.ID_MAX
    years = (last_ms_below + ids.EPOCH_UNIX_MS) / 1000 / 86400 / 365.25 + 1970
    assert 2060 < years < 2061
