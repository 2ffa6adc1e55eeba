"""The story store's contract, the same suite for the embedded store (with and without its
journal of first views) and the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from feed.story_store import MemoryStoryStore, RedisStoryStore, StoryStore
from tests.conftest import IN_CI
from tests.feed.conftest import REDIS_URL, drop_keys


@pytest.fixture(params=["memory", "journal", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoryStore]:
    if request.param == "memory":
        yield MemoryStoryStore()
        return
    if request.param == "journal":
        journalled = await MemoryStoryStore.open(tmp_path / "story_views.journal")
        try:
            yield journalled
        finally:
            await journalled.close()
        return
    async with redis_story_store() as redis:
        yield redis


@contextlib.asynccontextmanager
async def redis_story_store() -> AsyncIterator[RedisStoryStore]:
    """A RedisStoryStore under a fresh prefix, its keys deleted afterwards."""
    redis = RedisStoryStore(REDIS_URL, prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        await redis.redis.ping()
    except Exception as e:
        await redis.close()
        if IN_CI:
            pytest.fail(f"Redis unavailable: {e!r}")
        pytest.skip(f"Redis unavailable: {e!r}")
    try:
        yield redis
    finally:
        await drop_keys(redis)  # type: ignore[arg-type]
        await redis.close()


async def test_a_view_counts_once_and_is_queued_once(store: StoryStore) -> None:
    ttl = {"story_ttl_s": 60.0, "viewer_ttl_s": 60.0}
    assert await store.mark_seen((10, 1, 5.0), **ttl) is True
    assert await store.mark_seen((10, 1, 6.0), **ttl) is False
    assert await store.mark_seen((10, 2, 7.0), **ttl) is True
    assert await store.mark_seen((11, 1, 8.0), **ttl) is True
    assert await store.view_counts([10, 11, 12]) == {10: 2, 11: 1}
    assert await store.seen(1, [10, 11, 12]) == {10, 11}
    assert await store.seen(2, [10, 11]) == {10}
    assert await store.pending() == 3
    first = await store.take_pending(2)
    assert first == [(10, 1, 5.0), (10, 2, 7.0)]
    await store.requeue(first)  # a failed batch goes back to the head
    taken = await store.take_pending(10)
    assert taken == [(10, 1, 5.0), (10, 2, 7.0), (11, 1, 8.0)]
    assert await store.take_pending(10) == []
    await store.settled(taken)  # in SQL: the queue stays empty
    assert await store.pending() == 0 and await store.take_pending(10) == []


async def test_trays_are_kept_until_dropped_or_expired(store: StoryStore) -> None:
    assert await store.get_tray(1) == (None, 0)
    assert await store.put_tray(1, b"one", ttl_s=60, generation=0)
    assert await store.put_tray(2, b"two", ttl_s=60, generation=0)
    assert await store.put_tray(3, b"three", ttl_s=0.001, generation=0)
    assert await store.get_tray(1) == (b"one", 0)
    await store.drop_trays([1, 9])
    tray, generation = await store.get_tray(1)
    assert tray is None and generation != 0
    assert await store.get_tray(2) == (b"two", 0)
    for _ in range(500):  # the 1 ms tray expires; wait for that positively
        if (await store.get_tray(3))[0] is None:
            break
        await asyncio.sleep(0.002)
    assert await store.get_tray(3) == (None, 0)


async def test_a_tray_built_before_a_drop_is_not_stored_after_it(store: StoryStore) -> None:
    # A read misses (generation 0) and builds; a follow commits and drops meanwhile.
    _, before = await store.get_tray(5)
    await store.drop_trays([5])
    assert not await store.put_tray(5, b"stale", ttl_s=60, generation=before)
    tray, after = await store.get_tray(5)
    assert tray is None and after != before
    # The next read's build, after the drop, is stored; a later drop removes it.
    assert await store.put_tray(5, b"fresh", ttl_s=60, generation=after)
    assert await store.get_tray(5) == (b"fresh", after)
    seen = {before, after}
    for viewers in ([5, 6], [6], [5]):  # a generation never comes back for a viewer
        await store.drop_trays(viewers)
        for v in viewers:
            tray, generation = await store.get_tray(v)
            assert tray is None and generation not in seen
            seen.add(generation)
    assert not await store.put_tray(5, b"older", ttl_s=60, generation=after)


# -- Redis: a batch is taken under a lease ------------------------------------------------

TAKER = """
import asyncio, sys
from feed.story_store import RedisStoryStore

async def main() -> None:
    store = RedisStoryStore(sys.argv[1], prefix=sys.argv[2], taken_lease_s=float(sys.argv[3]))
    taken = await store.take_pending(2)
    print(repr(taken), flush=True)
    await asyncio.Event().wait()  # killed here, before the batch reaches SQL

asyncio.run(main())
"""


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with redis_story_store() as probe:
        yield probe.prefix


async def _queued(store: StoryStore, *views: tuple[int, int, float]) -> None:
    for view in views:
        assert await store.mark_seen(view, story_ttl_s=60.0, viewer_ttl_s=60.0)


async def test_a_flusher_killed_with_a_batch_in_hand_loses_no_view(redis_prefix: str) -> None:
    store = RedisStoryStore(REDIS_URL, prefix=redis_prefix)
    try:
        await _queued(store, (1, 1, 1.0), (1, 2, 2.0))
        taker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", TAKER, REDIS_URL, redis_prefix, "1.0",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert taker.stdout is not None
        line = await asyncio.wait_for(taker.stdout.readline(), 30)
        assert line.decode().strip() == "[(1, 1, 1.0), (1, 2, 2.0)]"
        taker.kill()  # SIGKILL: no settle, no requeue
        await taker.wait()
        # The first take after the dead batch's lease ended (1 s) gets it back, in order.
        deadline = time.monotonic() + 30
        taken = await store.take_pending(10)
        while not taken and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            taken = await store.take_pending(10)
        assert taken == [(1, 1, 1.0), (1, 2, 2.0)]
        await store.settled(taken)
        assert await store.take_pending(10) == []
    finally:
        await store.close()


async def test_settled_and_requeued_batches_end_their_lease(redis_prefix: str) -> None:
    # A zero lease: any batch still taken is put back by the next take.
    store = RedisStoryStore(REDIS_URL, prefix=redis_prefix, taken_lease_s=0.0)
    try:
        await _queued(store, (2, 1, 1.0), (2, 2, 2.0), (2, 3, 3.0))
        first = await store.take_pending(2)
        assert first == [(2, 1, 1.0), (2, 2, 2.0)]
        await store.settled(first)
        assert await store.take_pending(10) == [(2, 3, 3.0)]  # the settled batch stays gone
        await store.requeue([(2, 3, 3.0)])
        again = await store.take_pending(10)
        assert again == [(2, 3, 3.0)]  # requeued once, not also reclaimed
        await store.settled(again)
        assert await store.take_pending(10) == []
        assert await store.redis.hlen(redis_prefix + "sb") == 0
        assert await store.redis.zcard(redis_prefix + "sl") == 0
    finally:
        await store.close()


async def test_a_batch_not_settled_in_its_lease_is_taken_again(redis_prefix: str) -> None:
    lost = RedisStoryStore(REDIS_URL, prefix=redis_prefix, taken_lease_s=0.0)
    other = RedisStoryStore(REDIS_URL, prefix=redis_prefix)
    try:
        await _queued(lost, (3, 1, 1.0), (3, 2, 2.0), (3, 3, 3.0))
        assert await lost.take_pending(2) == [(3, 1, 1.0), (3, 2, 2.0)]
        # Another process's take puts the lost batch back at the head, in order.
        taken = await other.take_pending(10)
        assert taken == [(3, 1, 1.0), (3, 2, 2.0), (3, 3, 3.0)]
        await lost.settled([(3, 1, 1.0), (3, 2, 2.0)])  # late: its batch is gone already
        await other.settled(taken)
        assert await other.take_pending(10) == []
    finally:
        await lost.close()
        await other.close()
