"""The stories' hot state: per-story seen sets and view counts, per-viewer seen sets, the
views waiting for SQL, and the cached trays (docs/api/stories.md).

Two implementations pass one conformance suite (tests/feed/test_story_store.py):
RedisStoryStore (Redis when configured) and MemoryStoryStore (the embedded default, one
process's memory), as the feed's hot store does (feed/hotstore.py).

Keys (under the store's prefix): `sv:<story>` the set of its viewers, `sc:<story>` its view
count (an INCR when the viewer is new to the set, in the same script), `su:<viewer>` the
stories the viewer has seen (the tray's seen state in one SMISMEMBER), `sq` the list of
first views not yet in SQL (drained by feed/story_views.py), `st:<viewer>` a cached tray,
`sg:<viewer>` the viewer's tray generation. A view is therefore one round trip and no SQL
write; a repeated view changes nothing.

A tray is stored only if no drop came between the read that missed it and the store
(`put_tray(..., generation=)` against the generation `get_tray` returned; `drop_trays`
bumps it): a tray built from a snapshot taken before a follow's commit cannot land after
the drop that follows the commit and outlive it. A drop sets the generation to the next
value of one store-wide counter (`sgn`, never expiring), so a generation never repeats for
a viewer; it lives TRAY_GENERATION_TTL_S after its last drop and then reads as 0, which no
drop ever sets (a build that saw it before it expired stores nothing: one build uncached).

The embedded store journals its queue of first views to a file when given one
(feed/story_journal.py): `mark_seen` returns once the view's record is written, `open`
replays the file, and `settled` (the flusher's word that a batch it took is in SQL) lets it
empty or shrink the file. On Redis a batch is taken under a lease, in the server: the same
script that pops it from `sq` records it in `sb` (a hash, batch token -> its views) and its
deadline in `sl` (a sorted set), so a flusher whose process dies between the take and the
SQL commit loses nothing. `settled` deletes the batch; `requeue` puts it back at the head;
a batch still taken TAKEN_LEASE_S after it was taken is put back at the head by the next
take, whoever makes it (a slow flusher's batch may then be written twice, which
social/story_views.record absorbs: it skips the pairs already there).
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from feed.story_journal import ViewJournal

View = tuple[int, int, float]  # (story_id, viewer_id, viewed_unix_s)

PENDING: Final = "sq"
TAKEN_BATCHES: Final = "sb"  # batch token -> its views, "\n"-joined
TAKEN_LEASES: Final = "sl"  # batch token, scored by its lease's end (server ms)
# A batch taken and neither settled nor requeued this long after is taken to be lost with
# its flusher's process and queued again. Far longer than a batch's SQL write takes.
TAKEN_LEASE_S: Final = 60.0
# Lost batches put back by one take, at most (each is one flush batch of views).
RECLAIMED_PER_TAKE_MAX: Final = 16
# Far longer than any tray build takes (see the module docstring).
TRAY_GENERATION_TTL_S: Final = 3600.0

GENERATION_COUNTER: Final = "sgn"

# KEYS: the generation counter, then each viewer's tray and generation. ARGV: ttl ms.
_DROP_TRAYS_LUA: Final = """
for i = 2, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], redis.call('INCR', KEYS[1]), 'PX', ARGV[1])
end
return 1
"""

# KEYS: tray, generation. ARGV: payload, generation seen by the read, ttl ms.
_PUT_TRAY_LUA: Final = """
local g = redis.call('GET', KEYS[2]) or '0'
if g ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

# KEYS: viewers set, count, viewer's seen set, pending list.
# ARGV: viewer id, story id, "story:viewer:at", story keys ttl ms, viewer set ttl ms.
_MARK_LUA: Final = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('RPUSH', KEYS[4], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return 1
"""


# KEYS: pending list, taken batches hash, leases zset. ARGV: count, token, lease ms,
# reclaim max. Puts lost batches (lease ended) back at the head, oldest lease first, then
# takes up to `count` views under a new lease. Server time, so every host agrees.
_TAKE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for i = #lost, 1, -1 do
  local batch = redis.call('HGET', KEYS[2], lost[i])
  if batch then
    local views = {}
    for v in string.gmatch(batch, '[^\\n]+') do views[#views + 1] = v end
    for j = #views, 1, -1 do redis.call('LPUSH', KEYS[1], views[j]) end
  end
  redis.call('HDEL', KEYS[2], lost[i])
  redis.call('ZREM', KEYS[3], lost[i])
end
local taken = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if not taken then return {} end
redis.call('HSET', KEYS[2], ARGV[2], table.concat(taken, '\\n'))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[2])
return taken
"""

# KEYS: pending list, taken batches hash, leases zset. ARGV: token, "1" to requeue.
# Ends a batch's lease: settled (dropped) or requeued (back at the head). A batch already
# reclaimed by another take is not there any more: nothing happens.
_RELEASE_LUA: Final = """
local batch = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if batch and ARGV[2] == '1' then
  local views = {}
  for v in string.gmatch(batch, '[^\\n]+') do views[#views + 1] = v end
  for j = #views, 1, -1 do redis.call('LPUSH', KEYS[1], views[j]) end
end
return 1
"""


def _viewers_key(story_id: int) -> str:
    return f"sv:{story_id}"


def _count_key(story_id: int) -> str:
    return f"sc:{story_id}"


def _seen_key(viewer_id: int) -> str:
    return f"su:{viewer_id}"


def _tray_key(viewer_id: int) -> str:
    return f"st:{viewer_id}"


def _generation_key(viewer_id: int) -> str:
    return f"sg:{viewer_id}"


def _encode(view: View) -> bytes:
    return f"{view[0]}:{view[1]}:{view[2]!r}".encode()


def _decode(raw: bytes) -> View:
    story, viewer, at = raw.decode().split(":")
    return int(story), int(viewer), float(at)


class StoryStore(Protocol):
    async def mark_seen(self, view: View, *, story_ttl_s: float, viewer_ttl_s: float) -> bool:
        """Records a view; True when it is the viewer's first of the story (counted and
        queued for SQL), False for a repeat (nothing changes)."""

    async def seen(self, viewer_id: int, story_ids: Sequence[int]) -> set[int]:
        """The stories among these the viewer has seen."""

    async def view_counts(self, story_ids: Sequence[int]) -> dict[int, int]:
        """Counted views of the stories the store still holds (absent: not held)."""

    async def take_pending(self, count: int) -> list[View]:
        """Removes and returns up to `count` queued first views, oldest first."""

    async def requeue(self, views: Sequence[View]) -> None:
        """Puts views back at the head of the queue (a batch that failed to reach SQL)."""

    async def settled(self, views: Sequence[View]) -> None:
        """The views, taken by `take_pending`, are in SQL (their batch committed)."""

    async def pending(self) -> int: ...

    async def get_tray(self, viewer_id: int) -> tuple[bytes | None, int]:
        """The viewer's cached tray (None: none) and tray generation, read together."""

    async def put_tray(
        self, viewer_id: int, payload: bytes, *, ttl_s: float, generation: int
    ) -> bool:
        """Caches the tray unless the viewer's trays were dropped since `get_tray` returned
        `generation`; True when stored."""

    async def drop_trays(self, viewer_ids: Iterable[int]) -> None:
        """Drops the viewers' cached trays and bumps their generations."""

    async def close(self) -> None: ...


class RedisStoryStore:
    """The stories' hot state on a Redis server (redis.asyncio)."""

    def __init__(self, url: str, *, prefix: str, taken_lease_s: float = TAKEN_LEASE_S) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.redis: Any = aioredis.Redis.from_url(url, decode_responses=False)
        self.taken_lease_s = taken_lease_s
        # The batches this process took and has not settled: views -> their tokens.
        self._taken: dict[tuple[View, ...], list[str]] = {}
        self._mark = self.redis.register_script(_MARK_LUA)
        self._take = self.redis.register_script(_TAKE_LUA)
        self._release = self.redis.register_script(_RELEASE_LUA)
        self._put_tray = self.redis.register_script(_PUT_TRAY_LUA)
        self._drop_trays = self.redis.register_script(_DROP_TRAYS_LUA)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def mark_seen(self, view: View, *, story_ttl_s: float, viewer_ttl_s: float) -> bool:
        story_id, viewer_id, _ = view
        keys = [
            self._k(_viewers_key(story_id)),
            self._k(_count_key(story_id)),
            self._k(_seen_key(viewer_id)),
            self._k(PENDING),
        ]
        args: list[bytes | int] = [
            viewer_id,
            story_id,
            _encode(view),
            max(1, int(story_ttl_s * 1000)),
            max(1, int(viewer_ttl_s * 1000)),
        ]
        return bool(await self._mark(keys=keys, args=args))

    async def seen(self, viewer_id: int, story_ids: Sequence[int]) -> set[int]:
        if not story_ids:
            return set()
        flags = await self.redis.smismember(self._k(_seen_key(viewer_id)), list(story_ids))
        return {s for s, f in zip(story_ids, flags, strict=True) if f}

    async def view_counts(self, story_ids: Sequence[int]) -> dict[int, int]:
        if not story_ids:
            return {}
        values = await self.redis.mget([self._k(_count_key(s)) for s in story_ids])
        return {s: int(v) for s, v in zip(story_ids, values, strict=True) if v is not None}

    def _queue_keys(self) -> list[str]:
        return [self._k(PENDING), self._k(TAKEN_BATCHES), self._k(TAKEN_LEASES)]

    async def take_pending(self, count: int) -> list[View]:
        token = secrets.token_hex(8)
        lease_ms = max(0, int(self.taken_lease_s * 1000))
        args: list[int | str] = [count, token, lease_ms, RECLAIMED_PER_TAKE_MAX]
        raw = await self._take(keys=self._queue_keys(), args=args)
        views = [_decode(r) for r in raw or ()]
        if views:
            self._taken.setdefault(tuple(views), []).append(token)
        return views

    async def _end_lease(self, views: Sequence[View], *, requeue: bool) -> None:
        batch = tuple(views)
        tokens = self._taken.get(batch)
        if not tokens:
            if requeue and views:  # not a batch this store took: queue the views as given
                await self.redis.lpush(self._k(PENDING), *[_encode(v) for v in reversed(views)])
            return
        token = tokens.pop()
        if not tokens:
            del self._taken[batch]
        await self._release(keys=self._queue_keys(), args=[token, "1" if requeue else "0"])

    async def requeue(self, views: Sequence[View]) -> None:
        await self._end_lease(views, requeue=True)

    async def settled(self, views: Sequence[View]) -> None:
        await self._end_lease(views, requeue=False)

    async def pending(self) -> int:
        return int(await self.redis.llen(self._k(PENDING)))

    async def get_tray(self, viewer_id: int) -> tuple[bytes | None, int]:
        value, generation = await self.redis.mget(
            [self._k(_tray_key(viewer_id)), self._k(_generation_key(viewer_id))]
        )
        return (None if value is None else bytes(value)), int(generation or 0)

    async def put_tray(
        self, viewer_id: int, payload: bytes, *, ttl_s: float, generation: int
    ) -> bool:
        keys = [self._k(_tray_key(viewer_id)), self._k(_generation_key(viewer_id))]
        args: list[bytes | int] = [payload, generation, max(1, int(ttl_s * 1000))]
        return bool(await self._put_tray(keys=keys, args=args))

    async def drop_trays(self, viewer_ids: Iterable[int]) -> None:
        viewers = list(viewer_ids)
        ttl_ms = int(TRAY_GENERATION_TTL_S * 1000)
        for i in range(0, len(viewers), 1000):
            keys = [self._k(GENERATION_COUNTER)]
            for v in viewers[i : i + 1000]:
                keys += [self._k(_tray_key(v)), self._k(_generation_key(v))]
            await self._drop_trays(keys=keys, args=[ttl_ms])

    async def close(self) -> None:
        await self.redis.aclose()


class MemoryStoryStore:
    """The embedded stories' hot state: this process's memory, the same contract; with a
    journal (`open`), its queue of first views survives the process's death."""

    def __init__(self, *, clock: Any = time.monotonic, journal: ViewJournal | None = None) -> None:
        self._sets: dict[str, set[int]] = {}
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._trays: dict[int, tuple[bytes, float]] = {}
        # viewer -> (tray generation, when it expires); the last generation given.
        self._generations: dict[int, tuple[int, float]] = {}
        self._generation_last = 0
        self._pending: collections.deque[View] = collections.deque()
        # Taken by the flusher, not yet settled in SQL: still in the journal.
        self._taken: collections.Counter[View] = collections.Counter()
        self._clock = clock
        self._journal = journal

    @classmethod
    async def open(cls, journal_path: Path, *, clock: Any = time.monotonic) -> MemoryStoryStore:
        """The embedded store with its journal at `journal_path`: the views the journal
        holds (queued, not settled, when the last process died) are queued again, once
        each, oldest first."""
        journal, replayed = await asyncio.to_thread(ViewJournal.open, journal_path)
        store = cls(clock=clock, journal=journal)
        queued: set[tuple[int, int]] = set()
        for view in replayed:
            if (view[0], view[1]) not in queued:
                queued.add((view[0], view[1]))
                store._pending.append(view)
        return store

    def _live(self, key: str) -> bool:
        expires = self._expires.get(key)
        if expires is not None and expires <= self._clock():
            self._sets.pop(key, None)
            self._counts.pop(key, None)
            self._expires.pop(key, None)
        return key in self._sets or key in self._counts

    async def mark_seen(self, view: View, *, story_ttl_s: float, viewer_ttl_s: float) -> bool:
        story_id, viewer_id, _ = view
        viewers, count, seen = _viewers_key(story_id), _count_key(story_id), _seen_key(viewer_id)
        for key in (viewers, count, seen):
            self._live(key)
        members = self._sets.setdefault(viewers, set())
        if viewer_id in members:
            return False
        members.add(viewer_id)
        self._counts[count] = self._counts.get(count, 0) + 1
        self._sets.setdefault(seen, set()).add(story_id)
        self._pending.append(view)
        now = self._clock()
        self._expires[viewers] = self._expires[count] = now + story_ttl_s
        self._expires[seen] = now + viewer_ttl_s
        if self._journal is not None:
            # Submitted before any await, so a rewrite decided later includes this view
            # or comes after its settlement (feed/story_journal.py).
            await self._journal.append(view)
        return True

    async def seen(self, viewer_id: int, story_ids: Sequence[int]) -> set[int]:
        key = _seen_key(viewer_id)
        held = self._sets.get(key, set()) if self._live(key) else set()
        return {s for s in story_ids if s in held}

    async def view_counts(self, story_ids: Sequence[int]) -> dict[int, int]:
        out = {}
        for s in story_ids:
            key = _count_key(s)
            if self._live(key) and key in self._counts:
                out[s] = self._counts[key]
        return out

    async def take_pending(self, count: int) -> list[View]:
        taken = [self._pending.popleft() for _ in range(min(count, len(self._pending)))]
        self._taken.update(taken)
        return taken

    async def requeue(self, views: Sequence[View]) -> None:
        self._taken.subtract(views)
        self._taken = +self._taken
        self._pending.extendleft(reversed(views))

    async def settled(self, views: Sequence[View]) -> None:
        self._taken.subtract(views)
        self._taken = +self._taken  # drops the counts at zero
        if self._journal is None:
            return
        waiting = len(self._pending) + self._taken.total()
        if waiting == 0:
            await self._journal.rewrite(())
        elif self._journal.wants_rewrite(waiting):
            await self._journal.rewrite([*self._taken.elements(), *self._pending])

    async def pending(self) -> int:
        return len(self._pending)

    def _generation(self, viewer_id: int) -> int:
        held = self._generations.get(viewer_id)
        if held is None:
            return 0
        if held[1] <= self._clock():
            del self._generations[viewer_id]
            return 0
        return held[0]

    async def get_tray(self, viewer_id: int) -> tuple[bytes | None, int]:
        generation = self._generation(viewer_id)
        held = self._trays.get(viewer_id)
        if held is None:
            return None, generation
        if held[1] <= self._clock():
            del self._trays[viewer_id]
            return None, generation
        return held[0], generation

    async def put_tray(
        self, viewer_id: int, payload: bytes, *, ttl_s: float, generation: int
    ) -> bool:
        if self._generation(viewer_id) != generation:
            return False
        self._trays[viewer_id] = (payload, self._clock() + ttl_s)
        return True

    async def drop_trays(self, viewer_ids: Iterable[int]) -> None:
        expires = self._clock() + TRAY_GENERATION_TTL_S
        for v in viewer_ids:
            self._trays.pop(v, None)
            self._generation_last += 1
            self._generations[v] = (self._generation_last, expires)

    async def close(self) -> None:
        if self._journal is not None:
            await self._journal.close()


async def open_story_store(
    redis_url: str, *, prefix: str, journal_path: Path | None = None
) -> StoryStore:
    """Redis when a URL is configured, else the embedded store (journalled at
    `journal_path` when given)."""
    if redis_url:
        return RedisStoryStore(redis_url, prefix=prefix)
    if journal_path is not None:
        return await MemoryStoryStore.open(journal_path)
    return MemoryStoryStore()
