"""common/heap.py against the real collector: survivors of a long full collection are
frozen, a cycle that dies while frozen is reclaimed by the next refreeze, and closing
leaves no callback behind."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from common.heap import HeapKeeper


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's objects go back to the collector


async def test_the_survivors_of_a_long_full_collection_are_frozen() -> None:
    keeper = HeapKeeper(freeze_after_full_ms=0.0, refreeze_interval_s=3600)
    keeper.start()
    try:
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start > 0
        kept = [Node() for _ in range(5000)]  # made after the start-up freeze
        gc.collect()
        assert keeper.full_collections == 1
        await asyncio.sleep(0)  # the freeze runs on the loop, after the collection
        assert keeper.freezes == 1
        assert gc.get_freeze_count() >= frozen_at_start + len(kept)
        gc.collect()
        await asyncio.sleep(0)
        assert keeper.freezes == 2
    finally:
        keeper.close()
    assert keeper._on_collection not in gc.callbacks


async def test_a_short_full_collection_freezes_nothing() -> None:
    keeper = HeapKeeper(freeze_after_full_ms=60_000.0, refreeze_interval_s=3600)
    keeper.start()
    try:
        gc.collect()
        await asyncio.sleep(0)
        assert keeper.full_collections == 1
        assert keeper.freezes == 0
    finally:
        keeper.close()


async def test_a_cycle_that_died_frozen_is_reclaimed_by_the_refreeze() -> None:
    keeper = HeapKeeper(freeze_after_full_ms=60_000.0, refreeze_interval_s=0.05)
    keeper.start()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        dead = weakref.ref(a)
        gc.freeze()  # the cycle is frozen while alive, as a request in flight would be
        del a, b
        gc.collect()
        assert dead() is not None  # frozen: the collector does not see it
        for _ in range(100):
            if keeper.refreezes:
                break
            await asyncio.sleep(0.02)
        assert keeper.refreezes >= 1
        assert dead() is None
        assert gc.get_freeze_count() > 0  # and the survivors frozen again
    finally:
        keeper.close()
    stats = keeper.statistics()
    assert stats["refreezes"] >= 1 and stats["full_collections"] >= 1
