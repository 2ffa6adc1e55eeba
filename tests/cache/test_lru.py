"""NeedleLru: the byte bound, LRU order, item_bytes_max, forget by key."""

from __future__ import annotations

import pytest

from cache.lru import ENTRY_OVERHEAD_BYTES, CachedNeedle, NeedleLru


def entry(n: int) -> CachedNeedle:
    return CachedNeedle(b"x" * n, '"0000000000000000"')


def test_byte_bound_and_lru_order() -> None:
    lru = NeedleLru(bytes_max=3 * (100 + ENTRY_OVERHEAD_BYTES), item_bytes_max=100)
    for key in (1, 2, 3):
        assert lru.put((1, key, 0, 0), entry(100))
    assert lru.get((1, 1, 0, 0)) is not None  # 1 becomes most recently used
    assert lru.put((1, 4, 0, 0), entry(100))  # evicts 2
    assert lru.get((1, 2, 0, 0)) is None
    assert {k for k in (1, 3, 4) if lru.get((1, k, 0, 0))} == {1, 3, 4}
    st = lru.statistics()
    assert (st.items, st.data_bytes, st.evictions) == (3, 300, 1)
    assert st.bytes == 3 * (100 + ENTRY_OVERHEAD_BYTES) <= st.bytes_max


def test_item_bytes_max_and_replace() -> None:
    lru = NeedleLru(bytes_max=10_000, item_bytes_max=500)
    assert not lru.put((1, 1, 0, 0), entry(501))
    assert lru.statistics().rejected_too_large == 1
    assert lru.put((1, 1, 0, 0), entry(500))
    assert lru.put((1, 1, 0, 0), entry(10))  # replacing is not double-counted
    st = lru.statistics()
    assert (st.items, st.data_bytes) == (1, 10)


def test_one_big_item_evicts_many_small_ones() -> None:
    lru = NeedleLru(bytes_max=2000 + ENTRY_OVERHEAD_BYTES, item_bytes_max=2000)
    for key in range(4):
        lru.put((1, key, 0, 0), entry(10))
    assert lru.put((2, 9, 0, 0), entry(2000))
    assert len(lru) == 1


def test_forget_drops_every_variant_of_a_key_only() -> None:
    lru = NeedleLru(bytes_max=1 << 20, item_bytes_max=1 << 10)
    for alt in range(3):
        lru.put((1, 7, alt, 5), entry(10))
    lru.put((1, 8, 0, 5), entry(10))
    lru.put((2, 7, 0, 5), entry(10))
    assert lru.forget(1, 7) == 3
    assert lru.forget(1, 7) == 0
    assert len(lru) == 2
    assert lru.statistics().forgotten == 3


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        NeedleLru(bytes_max=0, item_bytes_max=1)
