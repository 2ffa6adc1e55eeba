"""The rate-limit counters' conformance suite: SQL (SQLite and PostgreSQL) and Redis pass the
same tests, two stores over the same data see one counter, concurrent events are never lost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from common.db import migrate, open_database
from social import schema as social_schema
from social.counters import Counters, RedisCounters, SqlCounters, stored_key
from social.schema import rate_counters
from tests.directory.conftest import PG_URL, pg_schema
from tests.feed.conftest import REDIS_URL, redis_store, social_db


@contextlib.asynccontextmanager
async def two_stores(kind: str, tmp: Path) -> AsyncIterator[tuple[Counters, Counters]]:
    """Two counter stores over the same data, as two API processes hold them."""
    if kind == "redis":
        probe = await redis_store()  # skips (fails in CI) without Redis
        await probe.close()
        prefix = f"t{uuid.uuid4().hex[:12]}:rl:"
        a, b = RedisCounters(REDIS_URL, prefix=prefix), RedisCounters(REDIS_URL, prefix=prefix)
        try:
            yield a, b
        finally:
            keys = [k async for k in a.redis.scan_iter(match=prefix + "*")]
            if keys:
                await a.redis.delete(*keys)
            await a.close()
            await b.close()
        return
    async with contextlib.AsyncExitStack() as stack:
        url: str | Path = tmp / "meta.sqlite3"
        schema = None
        if kind == "postgresql":
            url, schema = PG_URL, await stack.enter_async_context(pg_schema())
        dbs = [await open_database(url, schema=schema) for _ in range(2)]
        for db in dbs:
            stack.push_async_callback(db.close)
        await migrate(dbs[0], social_schema.COMPONENT, social_schema.MIGRATIONS)
        yield SqlCounters(dbs[0]), SqlCounters(dbs[1])


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Counters, Counters]]:
    async with two_stores(request.param, tmp_path) as pair:
        yield pair


async def test_events_count_per_key_within_the_window(stores: tuple[Counters, Counters]) -> None:
    counters, _ = stores
    got = [await counters.incr("like:1", window_s=3600) for _ in range(3)]
    assert [w.count for w in got] == [1, 2, 3]
    assert all(3590 < w.reset_s <= 3600 for w in got)
    assert (await counters.incr("like:2", window_s=3600)).count == 1
    assert (await counters.incr("follow:1", window_s=3600)).count == 1


async def test_two_stores_share_one_counter(stores: tuple[Counters, Counters]) -> None:
    a, b = stores
    assert (await a.incr("account:10.0.0.1", window_s=60)).count == 1
    assert (await b.incr("account:10.0.0.1", window_s=60)).count == 2
    await b.refund("account:10.0.0.1")
    assert (await a.incr("account:10.0.0.1", window_s=60)).count == 2


async def test_concurrent_events_are_all_counted(stores: tuple[Counters, Counters]) -> None:
    a, b = stores
    got = await asyncio.gather(
        *(store.incr("comment:7", window_s=60) for store in (a, b) for _ in range(10))
    )
    assert sorted(w.count for w in got) == list(range(1, 21))


async def test_refunds_take_back_one_event_never_below_zero(
    stores: tuple[Counters, Counters],
) -> None:
    counters, _ = stores
    await counters.refund("login:nobody")  # no window: nothing to take back
    assert (await counters.incr("login:nobody", window_s=60)).count == 1
    for _ in range(3):
        await counters.incr("login:x", window_s=60)
    await counters.refund("login:x")
    assert (await counters.incr("login:x", window_s=60)).count == 3
    await counters.refund("login:nobody")
    await counters.refund("login:nobody")
    assert (await counters.incr("login:nobody", window_s=60)).count == 1


async def test_a_window_ends_and_the_next_event_starts_one(
    stores: tuple[Counters, Counters],
) -> None:
    counters, _ = stores
    for _ in range(3):
        await counters.incr("follow:9", window_s=1)
    deadline = asyncio.get_running_loop().time() + 10
    while (got := await counters.incr("follow:9", window_s=1)).count != 1:
        assert asyncio.get_running_loop().time() < deadline, "the window never ended"
        await asyncio.sleep(0.1)
    assert 0 < got.reset_s <= 1


async def test_sql_windows_follow_the_clock_and_ended_rows_are_swept(tmp_path: Path) -> None:
    now = [1000.0]
    async with social_db("sqlite", tmp_path) as db:
        counters = SqlCounters(db, clock=lambda: now[0])
        assert (await counters.incr("like:1", window_s=60)).count == 1  # sweeps: nothing yet
        now[0] += 30
        got = await counters.incr("like:1", window_s=60)
        assert (got.count, got.reset_s) == (2, 30.0)
        await counters.incr("like:2", window_s=10)
        now[0] += 30  # like:1's window ends now
        await counters.refund("like:1")  # an ended window is not refunded into the next
        got = await counters.incr("like:1", window_s=60)
        assert (got.count, got.reset_s) == (1, 60.0)
        now[0] += 61  # every window ended, and a sweep is due
        await counters.incr("like:3", window_s=60)
        async with db.snapshot() as conn:
            keys = [r[0] for r in await conn.execute(sa.select(rate_counters.c.counter_key))]
        assert keys == ["like:3"]


async def test_long_keys_are_stored_as_their_digest(tmp_path: Path) -> None:
    key = "sign_in_address:" + "x" * 300
    assert stored_key(key).startswith("sha256:") and len(stored_key(key)) == 71
    assert stored_key("like:1") == "like:1"
    async with social_db("sqlite", tmp_path) as db:
        counters = SqlCounters(db)
        assert (await counters.incr(key, window_s=60)).count == 1
        assert (await counters.incr(key, window_s=60)).count == 2
