"""The lean Redis client against the real Redis: pipelined replies reach their callers,
errors surface, scripts load themselves, a lost or stalled connection is replaced, the
URL's database is selected and the waiting queue is bounded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from feed import leanredis
from feed.leanredis import LeanRedis, LeanRedisError
from tests.feed.conftest import REDIS_URL, redis_store


@pytest.fixture
async def lean() -> AsyncIterator[tuple[LeanRedis, str]]:
    store = await redis_store()  # fails under CI=true when Redis is missing
    prefix = store.prefix
    client = LeanRedis(REDIS_URL)
    try:
        yield client, prefix
    finally:
        await client.close()
        keys = [k async for k in store.redis.scan_iter(match=prefix + "*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


async def test_pipelined_replies_reach_their_callers(lean: tuple[LeanRedis, str]) -> None:
    client, prefix = lean
    await asyncio.gather(*(client.call(b"SET", f"{prefix}k{i}", f"v{i}") for i in range(300)))
    got = await asyncio.gather(*(client.call(b"GET", f"{prefix}k{i}") for i in range(300)))
    assert got == [f"v{i}".encode() for i in range(300)]
    assert await client.call(b"GET", f"{prefix}absent") is None


async def test_an_error_reply_raises_and_the_connection_goes_on(
    lean: tuple[LeanRedis, str],
) -> None:
    client, prefix = lean
    await client.call(b"SET", f"{prefix}s", b"text")
    with pytest.raises(LeanRedisError, match="WRONGTYPE"):
        await client.call(b"ZADD", f"{prefix}s", 1, b"m")
    assert await client.call(b"PING") == b"PONG"


async def test_a_script_unknown_to_redis_is_loaded(lean: tuple[LeanRedis, str]) -> None:
    client, prefix = lean
    script = f"return {{KEYS[1], ARGV[1], '{uuid.uuid4().hex}'}}".encode()
    got = await client.evalsha(script, [f"{prefix}a"], [7])
    assert got[:2] == [f"{prefix}a".encode(), b"7"]
    assert await client.evalsha(script, [f"{prefix}b"], [8]) == [
        f"{prefix}b".encode(),
        b"8",
        got[2],
    ]


async def test_a_killed_connection_fails_its_request_and_is_replaced(
    lean: tuple[LeanRedis, str],
) -> None:
    client, prefix = lean
    client_id = await client.call(b"CLIENT", b"ID")
    blocked = asyncio.ensure_future(client.call(b"BLPOP", f"{prefix}never", 10))
    await asyncio.sleep(0.1)
    store = await redis_store()
    try:
        assert await store.redis.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    finally:
        await store.close()
    with pytest.raises(LeanRedisError, match="lost"):
        await blocked
    assert await client.call(b"PING") == b"PONG"
    assert await client.call(b"CLIENT", b"ID") != client_id


async def test_a_stalled_reply_times_out_and_the_next_call_reconnects(
    lean: tuple[LeanRedis, str],
) -> None:
    _, prefix = lean
    slow = LeanRedis(REDIS_URL, timeout_s=0.3)
    try:
        with pytest.raises(LeanRedisError, match="no reply"):
            await slow.call(b"BLPOP", f"{prefix}never", 2)
        assert await slow.call(b"PING") == b"PONG"  # a new connection, not the stale reply
    finally:
        await slow.close()


async def test_each_waiting_request_gets_its_own_deadline(lean: tuple[LeanRedis, str]) -> None:
    """The connection's one timer, armed for a request answered in time, waits on for the
    next one's deadline: that request fails a full timeout after it was sent, not at the
    first request's deadline."""
    _, prefix = lean
    slow = LeanRedis(REDIS_URL, timeout_s=0.4)
    try:
        assert await slow.call(b"PING") == b"PONG"  # arms the timer for its own deadline
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        with pytest.raises(LeanRedisError, match="no reply"):
            await slow.call(b"BLPOP", f"{prefix}never", 2)
        assert 0.4 - 0.01 <= loop.time() - sent < 1.5
        assert await slow.call(b"PING") == b"PONG"
    finally:
        await slow.close()


async def test_the_urls_database_is_selected(lean: tuple[LeanRedis, str]) -> None:
    _, prefix = lean
    other = LeanRedis(REDIS_URL.rsplit("/", 1)[0] + "/3")
    try:
        await other.call(b"SET", f"{prefix}db", b"three")
        assert await other.call(b"GET", f"{prefix}db") == b"three"
        assert await lean[0].call(b"GET", f"{prefix}db") is None  # not in database 0
        await other.call(b"DEL", f"{prefix}db")
    finally:
        await other.close()


async def test_the_waiting_queue_is_bounded(
    lean: tuple[LeanRedis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, prefix = lean
    monkeypatch.setattr(leanredis, "LEAN_PENDING_MAX", 2)
    waiting = [asyncio.ensure_future(client.call(b"BLPOP", f"{prefix}q", 5)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(LeanRedisError, match="more than 2"):
        await client.call(b"PING")
    await client.close()  # the blocked ones fail with the connection
    for w in waiting:
        with pytest.raises(LeanRedisError):
            await w
