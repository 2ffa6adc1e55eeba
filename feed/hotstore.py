"""Timelines and celebrity lists: the feed's hot store.

Two implementations pass the same conformance suite (tests/feed/test_hotstore.py):
RedisHotStore (Redis when configured; what a deployment runs) and MemoryHotStore (the
embedded default of `pinhole up`, one process's memory).

A list (a follower's timeline or a celebrity's posts) is a Redis sorted set. Ids exceed a
double's 53 bits, so the score is only the id's millisecond and the member is the post id
and the author id as two big-endian u64 (16 bytes): Redis orders equal scores by member
bytes, which is id order, so (score, member) order is exactly id order and a page "below
post id X" neither skips nor repeats posts of the same millisecond. The author in the
member lets an unfollow remove a followee's entries without a database read.

A list exists or not: an absent timeline is rebuilt from SQL (feed/service.py). Every
list holds a sentinel member (b"") so an existing empty list is not taken for an absent one;
pushes go only into lists that exist (inactive users' timelines have expired and are
skipped). A list keeps its newest `cap` entries. The sentinel's score says whether the list
is complete, that is holds every post of its sources older than its newest entries (score
-2: a rebuild that read fewer posts than the cap, never trimmed since) or may lack older
ones (score -1: trimmed, or a backfill that stopped at its limit). A read that reaches the
end of a complete list is done; past the end of another one it goes on in SQL.

`pages` reads several lists below their cursors in one round trip (a feed read: the
viewer's timeline and the lists of the celebrities the viewer follows).
"""

from __future__ import annotations

import bisect
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from common import ids
from feed.leanredis import LeanRedis

ENTRY: Final = struct.Struct(">QQ")  # post id, author id
SENTINEL: Final = b""
SENTINEL_SCORE: Final = -1  # the list may lack older posts of its sources
COMPLETE_SCORE: Final = -2  # the list holds every older post of its sources
# One page read fetches this many extra entries of the cursor's millisecond at a time.
_TIE_FETCH: Final = 64

Entry = tuple[int, int]  # (post_id, author_id)
# One list read of `pages`: (key, before post id or None, count).
Read = tuple[str, int | None, int]


@dataclass(frozen=True, slots=True)
class Slice:
    """Entries of one list below a cursor, newest first."""

    entries: list[Entry]
    more: bool  # the list may hold entries below the last one
    complete: bool  # the list holds every older post of its sources (see module docstring)


def score(post_id: int) -> int:
    """The post id's milliseconds since ids.EPOCH_UNIX_MS (exact in a double)."""
    return post_id >> (ids.SHARD_BITS + ids.SEQUENCE_BITS)


def encode(entry: Entry) -> bytes:
    return ENTRY.pack(*entry)


def decode(member: bytes) -> Entry:
    post_id, author_id = ENTRY.unpack(member)
    return int(post_id), int(author_id)


def _decode_all(members: list[bytes]) -> list[Entry]:
    """Entry members (never the sentinel: pages read above its score) in one pass."""
    return list(ENTRY.iter_unpack(b"".join(members)))


class HotStore(Protocol):
    async def exists(self, key: str) -> bool: ...

    async def create(self, key: str, *, ttl_s: float) -> bool:
        """Makes an empty list unless it exists; True when made now."""

    async def add(
        self,
        keys: Sequence[str],
        entries: Sequence[Entry],
        *,
        cap: int,
        complete: bool | None = None,
    ) -> int:
        """Adds the entries to each list of `keys` that exists and trims it to `cap`;
        returns how many lists took them. Idempotent. A trim marks a list incomplete;
        `complete` True marks it complete unless trimmed, False incomplete."""

    async def remove(self, keys: Sequence[str], entries: Sequence[Entry]) -> None: ...

    async def remove_author(self, key: str, author_id: int) -> int:
        """Removes every entry of one author from a list; returns how many."""

    async def page(self, key: str, *, before: int | None, count: int) -> list[Entry] | None:
        """Up to `count` entries with post id < before (all when None), newest first; None
        when the list does not exist."""

    async def pages(self, reads: Sequence[Read]) -> list[Slice | None]:
        """Several page reads at once (one round trip); None for a list that does not
        exist."""

    async def touch(self, key: str, *, ttl_s: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def size(self, key: str) -> int:
        """Entries in a list (sentinel not counted)."""

    async def memory_bytes(self, key: str) -> int | None:
        """The store's own figure for a key's memory (None when it has none)."""

    async def close(self) -> None: ...


# -- Redis -----------------------------------------------------------------------------------

# KEYS: the lists; ARGV: cap, history ("", "complete" or "partial"), then (score, member)
# pairs. A list that does not exist is left alone (its owner is inactive: it is rebuilt on
# return). Rank 0 is the sentinel (the lowest score): the trim keeps it and the newest cap.
_ADD_LUA: Final = """
local cap = tonumber(ARGV[1])
local history = ARGV[2]
local took = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    for j = 3, #ARGV, 2 do
      redis.call('ZADD', KEYS[i], ARGV[j], ARGV[j + 1])
    end
    local trimmed = redis.call('ZREMRANGEBYRANK', KEYS[i], 1, -(cap + 1))
    if trimmed > 0 or history == 'partial' then
      redis.call('ZADD', KEYS[i], 'XX', -1, '')
    elseif history == 'complete' then
      redis.call('ZADD', KEYS[i], 'XX', -2, '')
    end
    took = took + 1
  end
end
return took
"""

# KEYS: the lists; ARGV: a top score ("+inf" or a millisecond) and a count, once for all
# lists or once per list. Per list: false when it does not exist, else {sentinel score,
# members newest first}.
_PAGES_LUA: Final = """
local shared = #ARGV == 2
local out = {}
for i = 1, #KEYS do
  local flag = redis.call('ZSCORE', KEYS[i], '')
  if flag then
    local a = shared and 1 or 2 * i - 1
    out[i] = {flag, redis.call('ZREVRANGEBYSCORE', KEYS[i], ARGV[a], '(-1',
                               'LIMIT', 0, ARGV[a + 1])}
  else
    out[i] = false
  end
end
return out
"""


_PAGES_SCRIPT: Final = _PAGES_LUA.encode()


def _history(complete: bool | None) -> str:
    return "" if complete is None else ("complete" if complete else "partial")


class RedisHotStore:
    """The hot store on a Redis server (redis.asyncio; one connection pool)."""

    def __init__(self, url: str, *, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.redis: Any = aioredis.Redis.from_url(url, decode_responses=False)
        self._add = self.redis.register_script(_ADD_LUA)
        self.lean = LeanRedis(url)  # the feed read's one call (feed/leanredis.py)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def exists(self, key: str) -> bool:
        return bool(await self.redis.exists(self._k(key)))

    async def create(self, key: str, *, ttl_s: float) -> bool:
        k = self._k(key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(k, {SENTINEL: SENTINEL_SCORE}, nx=True)
            pipe.pexpire(k, int(ttl_s * 1000))
            made, _ = await pipe.execute()
        return bool(made)

    async def add(
        self,
        keys: Sequence[str],
        entries: Sequence[Entry],
        *,
        cap: int,
        complete: bool | None = None,
    ) -> int:
        if not keys or (not entries and complete is None):
            return 0
        args: list[Any] = [cap, _history(complete)]
        for entry in entries:
            args += [score(entry[0]), encode(entry)]
        result = await self._add(keys=[self._k(k) for k in keys], args=args)
        return int(result)

    async def remove(self, keys: Sequence[str], entries: Sequence[Entry]) -> None:
        if not keys or not entries:
            return
        members = [encode(e) for e in entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrem(self._k(key), *members)
            await pipe.execute()

    async def remove_author(self, key: str, author_id: int) -> int:
        k = self._k(key)
        members = await self.redis.zrange(k, 1, -1)
        gone = [m for m in members if len(m) == ENTRY.size and decode(m)[1] == author_id]
        if gone:
            await self.redis.zrem(k, *gone)
        return len(gone)

    async def page(self, key: str, *, before: int | None, count: int) -> list[Entry] | None:
        k = self._k(key)
        top: Any = "+inf" if before is None else score(before)
        out: list[Entry] = []
        offset = 0
        while len(out) < count:
            want = count - len(out) + (0 if before is None else _TIE_FETCH)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.exists(k)
                pipe.zrevrangebyscore(k, top, "(-1", start=offset, num=want)
                exists, members = await pipe.execute()
            if not exists:
                return None
            for m in members:
                entry = decode(m)
                if before is None or entry[0] < before:
                    out.append(entry)
            if len(members) < want:
                break
            offset += len(members)
        return out[:count]

    async def pages(self, reads: Sequence[Read]) -> list[Slice | None]:
        if not reads:
            return []
        keys: list[str] = []
        args: list[Any] = []
        wants: list[int] = []
        for key, before, count in reads:
            # Below a cursor the top millisecond may hold entries at or above it: a few
            # more are fetched and dropped here.
            want = count + (0 if before is None else _TIE_FETCH)
            keys.append(self.prefix + key)
            args += ["+inf" if before is None else score(before), want]
            wants.append(want)
        if all(a == args[0] for a in args[::2]) and all(w == wants[0] for w in wants):
            args = args[:2]  # one cursor for all (a first round): fewer arguments to send
        raw = await self.lean.evalsha(_PAGES_SCRIPT, keys, args)
        out: list[Slice | None] = []
        for (key, before, count), want, got in zip(reads, wants, raw, strict=True):
            if not got:
                out.append(None)
                continue
            flag, members = got
            entries = _decode_all(members)
            if before is not None:
                entries = [e for e in entries if e[0] < before]
            more = len(members) >= want
            if more and len(entries) < count:  # a millisecond more crowded than _TIE_FETCH
                again = await self.page(key, before=before, count=count + 1)
                if again is None:
                    out.append(None)
                    continue
                entries, more = again, len(again) > count
            out.append(
                Slice(
                    entries[:count],
                    more=more or len(entries) > count,
                    complete=float(flag) == COMPLETE_SCORE,
                )
            )
        return out

    async def touch(self, key: str, *, ttl_s: float) -> None:
        await self.redis.pexpire(self._k(key), int(ttl_s * 1000))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self.redis.delete(*[self._k(k) for k in keys])

    async def size(self, key: str) -> int:
        return max(0, int(await self.redis.zcard(self._k(key))) - 1)

    async def memory_bytes(self, key: str) -> int | None:
        got = await self.redis.memory_usage(self._k(key), samples=0)
        return None if got is None else int(got)

    async def close(self) -> None:
        try:
            await self.lean.close()
        finally:
            await self.redis.aclose()


# -- embedded --------------------------------------------------------------------------------


class MemoryHotStore:
    """The embedded hot store: this process's memory, same contract (TTL included)."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._lists: dict[str, list[Entry]] = {}  # ascending id order
        self._expires: dict[str, float] = {}
        self._complete: set[str] = set()
        self._clock = clock

    def _live(self, key: str) -> list[Entry] | None:
        expires = self._expires.get(key)
        if expires is not None and expires <= self._clock():
            self._lists.pop(key, None)
            self._expires.pop(key, None)
            self._complete.discard(key)
        return self._lists.get(key)

    async def exists(self, key: str) -> bool:
        return self._live(key) is not None

    async def create(self, key: str, *, ttl_s: float) -> bool:
        made = self._live(key) is None
        if made:
            self._lists[key] = []
            self._complete.discard(key)
        self._expires[key] = self._clock() + ttl_s
        return made

    async def add(
        self,
        keys: Sequence[str],
        entries: Sequence[Entry],
        *,
        cap: int,
        complete: bool | None = None,
    ) -> int:
        took = 0
        for key in keys:
            items = self._live(key)
            if items is None:
                continue
            for entry in entries:
                i = bisect.bisect_left(items, entry[0], key=lambda e: e[0])
                if i < len(items) and items[i][0] == entry[0]:
                    items[i] = entry
                else:
                    items.insert(i, entry)
            if len(items) > cap or complete is False:
                del items[: max(0, len(items) - cap)]
                self._complete.discard(key)
            elif complete:
                self._complete.add(key)
            took += 1
        return took

    async def remove(self, keys: Sequence[str], entries: Sequence[Entry]) -> None:
        gone = {e[0] for e in entries}
        for key in keys:
            items = self._live(key)
            if items is not None:
                items[:] = [e for e in items if e[0] not in gone]

    async def remove_author(self, key: str, author_id: int) -> int:
        items = self._live(key)
        if items is None:
            return 0
        kept = [e for e in items if e[1] != author_id]
        removed = len(items) - len(kept)
        items[:] = kept
        return removed

    async def page(self, key: str, *, before: int | None, count: int) -> list[Entry] | None:
        items = self._live(key)
        if items is None:
            return None
        end = len(items) if before is None else bisect.bisect_left(items, before, key=_post)
        return list(reversed(items[max(0, end - count) : end]))

    async def pages(self, reads: Sequence[Read]) -> list[Slice | None]:
        out: list[Slice | None] = []
        for key, before, count in reads:
            items = self._live(key)
            if items is None:
                out.append(None)
                continue
            end = len(items) if before is None else bisect.bisect_left(items, before, key=_post)
            start = max(0, end - count)
            out.append(
                Slice(
                    list(reversed(items[start:end])),
                    more=start > 0,
                    complete=key in self._complete,
                )
            )
        return out

    async def touch(self, key: str, *, ttl_s: float) -> None:
        if self._live(key) is not None:
            self._expires[key] = self._clock() + ttl_s

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._lists.pop(key, None)
            self._expires.pop(key, None)
            self._complete.discard(key)

    async def size(self, key: str) -> int:
        return len(self._live(key) or ())

    async def memory_bytes(self, key: str) -> int | None:
        return None

    async def close(self) -> None:
        self._lists.clear()


def _post(entry: Entry) -> int:
    return entry[0]


def open_hot_store(redis_url: str, *, prefix: str) -> HotStore:
    """Redis when a URL is configured, else the embedded store."""
    if redis_url:
        return RedisHotStore(redis_url, prefix=prefix)
    return MemoryHotStore()


def timeline_key(user_id: int) -> str:
    return f"tl:{user_id}"


def celebrity_key(author_id: int) -> str:
    return f"cl:{author_id}"


def keys_of(user_ids: Iterable[int]) -> list[str]:
    return [timeline_key(u) for u in user_ids]
