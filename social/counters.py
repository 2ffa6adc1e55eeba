"""Fixed-window counters for the rate limits, shared by every API process and kept across
restarts: in Redis when `[feed] redis_url` is set (`RedisCounters`), else in the metadata
database's `rate_counters` table (`SqlCounters`). Both pass one conformance suite
(tests/social/test_counters.py).

A window starts with the first event of its key and lasts `window_s`; the event after it
ends starts a new one at 1. `refund` takes back one event of the window in hand (a sign-in
that turned out right is no failure), never below 0 and never into a later window.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from common.db import Database
from social.schema import COUNTER_KEY_CHARS_MAX, rate_counters

# Expired rows of rate_counters are deleted at most this often per process, this many at a
# time (a sweep rides on an increment, so an idle API deletes nothing and needs nothing).
SWEEP_INTERVAL_S: Final = 60.0
SWEEP_ROWS_MAX: Final = 1000


@dataclass(frozen=True, slots=True)
class Window:
    count: int  # events in the window so far, this one included
    reset_s: float  # seconds until the window ends


class Counters(Protocol):
    async def incr(self, key: str, *, window_s: int) -> Window:
        """Counts one event of `key` in its current window (starting one if none)."""

    async def refund(self, key: str) -> None:
        """Takes back one event of the key's current window; nothing once it ended."""

    async def close(self) -> None: ...


def stored_key(key: str) -> str:
    """The key as stored: keys over the column's width become their sha256 (ASCII keys of
    addresses and usernames stay readable)."""
    if len(key) <= COUNTER_KEY_CHARS_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class SqlCounters:
    """Counters in the `rate_counters` table: one atomic upsert per event (no read before
    the write, so concurrent API processes never lose a count)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._swept_unix_s = 0.0

    def _upsert(self) -> Any:
        return postgresql.insert if self.db.is_postgresql else sqlite.insert

    async def incr(self, key: str, *, window_s: int) -> Window:
        key = stored_key(key)
        now = self._clock()
        c = rate_counters.c
        ended = c.window_end_unix_s <= now
        statement = (
            self._upsert()(rate_counters)
            .values(counter_key=key, count=1, window_end_unix_s=now + window_s)
            .on_conflict_do_update(
                index_elements=[c.counter_key],
                set_={
                    "count": sa.case((ended, 1), else_=c.count + 1),
                    "window_end_unix_s": sa.case(
                        (ended, now + window_s), else_=c.window_end_unix_s
                    ),
                },
            )
            .returning(c.count, c.window_end_unix_s)
        )
        async with self.db.transaction(lock=f"rate:{key}") as conn:
            count, end = (await conn.execute(statement)).one()
        if now - self._swept_unix_s >= SWEEP_INTERVAL_S:
            self._swept_unix_s = now
            await self._sweep(now)
        return Window(int(count), max(0.0, float(end) - now))

    async def refund(self, key: str) -> None:
        c = rate_counters.c
        async with self.db.transaction(lock=f"rate:{stored_key(key)}") as conn:
            await conn.execute(
                rate_counters.update()
                .where(
                    c.counter_key == stored_key(key),
                    c.window_end_unix_s > self._clock(),
                    c.count > 0,
                )
                .values(count=c.count - 1)
            )

    async def _sweep(self, now: float) -> None:
        c = rate_counters.c
        ended = sa.select(c.counter_key).where(c.window_end_unix_s <= now).limit(SWEEP_ROWS_MAX)
        async with self.db.transaction(lock="rate_counters_sweep") as conn:
            await conn.execute(rate_counters.delete().where(c.counter_key.in_(ended)))

    async def close(self) -> None:
        """The database belongs to the caller."""


# KEYS[1]: the counter. Decrements only a live window above 0: a key that expired meanwhile
# is not brought back without its TTL.
_REFUND_LUA: Final = """
local count = tonumber(redis.call('GET', KEYS[1]))
if count and count > 0 then
  return redis.call('DECR', KEYS[1])
end
return false
"""


class RedisCounters:
    """Counters as Redis strings: INCR, the window's expiry set by its first event
    (EXPIRE NX, Redis 7+), its remaining PTTL read in the same transaction."""

    def __init__(self, url: str, *, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.redis: Any = aioredis.Redis.from_url(url, decode_responses=False)
        self._refund = self.redis.register_script(_REFUND_LUA)

    async def incr(self, key: str, *, window_s: int) -> Window:
        k = self.prefix + key
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(k)
            pipe.expire(k, window_s, nx=True)
            pipe.pttl(k)
            count, _, pttl = await pipe.execute()
        return Window(int(count), max(0.0, int(pttl) / 1000))

    async def refund(self, key: str) -> None:
        await self._refund(keys=[self.prefix + key])

    async def close(self) -> None:
        await self.redis.aclose()


def open_counters(db: Database, redis_url: str, *, prefix: str) -> Counters:
    """Redis when a URL is configured (keys `<prefix>rl:...`), else the database."""
    if redis_url:
        return RedisCounters(redis_url, prefix=prefix + "rl:")
    return SqlCounters(db)
