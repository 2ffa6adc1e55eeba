"""`pinhole bench feed`: the three feed strategies (push, pull, hybrid) on one synthetic graph.

The graph: N users (full 100,000; quick 3,000), each drawing `follow_draws` followees with
Zipf weights (exponent ZIPF_S) over a random order of the users, so follower counts follow
a power law (full: a few accounts above 50,000 followers, a few dozen above 10,000); a
backlog of older live posts (uniform authors). Rows go straight into SQLite (a temporary
file; --database-url for PostgreSQL) with SQLAlchemy core, in executemany batches.

Per strategy (same graph, its own Redis key prefix, deleted at the end with SCAN + DEL):
1. warm-up: every reader of the reader set reads its first page once (timelines built);
2. posting: `posts` posts (uniform authors), each row and its publish job in one
   transaction, then Feed.posted() and FanoutRunner.drain();
3. reads: 100 reads per post of the first page (limit 20) by random readers, `concurrency`
   tasks on uvloop (the API's loop): feed_p99_ms, feed_reads_per_s and this process's CPU
   time per read (the SQL driver's thread included; Redis is another process);
4. a check: the first pages of some readers equal the pull strategy's (the oracle);
5. fanout_5k_s (push, hybrid): from the commit of a post by the author with the follower
   count nearest 5,000 (quick: scaled) to 99% of its followers' timelines holding it; every
   follower's timeline exists first. Measured by a counting proxy of the hot store, then
   checked with ZSCORE on every follower's timeline;
6. writes_per_celebrity_post: list writes (other than the author's own timeline) of one post
   by the author nearest above 50,000 followers (quick: the largest), every follower's
   timeline existing: push = timelines written, hybrid = 1 (the celebrity list), pull = 0.

The benchmark's process reads as the API process does about the cyclic collector: what its
set-up made (modules, the engine, the graph) and, per strategy, what the warm-up made (the
feed's remembered activity stamps, the clients) is frozen out of the collector's sight
(`gc.freeze()`, as `serve_forever` does once the API is up), so a full collection during the
reads walks only what the reads themselves made. The gen2 collections that ran during a
strategy's reads, and their longest pause, are in its detail (`reads.gc_full`).

Besides: redis_bytes_per_timeline_entry, MEMORY USAGE of full timelines (800 entries) over
their entry count. Quick mode scales the thresholds (fanout_threshold, the 5,000 and 50,000
authors) by users / 100,000 and says so in "plan".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
import uvloop

from bench import feed_http
from bench.collector import FullCollections, freeze_setup
from bench.report import Goals, publish, run_header
from common import ids
from common.db import Database, migrate, open_database, sqlite_url
from feed import jobs
from feed import schema as feed_schema
from feed.config import FeedConfig
from feed.cursor import Cursor
from feed.hotstore import (
    SENTINEL,
    SENTINEL_SCORE,
    Entry,
    MemoryHotStore,
    Read,
    RedisHotStore,
    Slice,
    encode,
    timeline_key,
)
from feed.runner import FanoutRunner
from feed.service import Feed
from social import schema as social_schema
from social import search_schema
from social.schema import follows, posts, users
from transformer import schema as transformer_schema

GOALS: Final[Goals] = {
    "feed_p99_ms_hybrid": ("<", 10.0),
    "feed_reads_per_s_hybrid": (">=", 2000.0),
    "fanout_5k_s": ("<", 1.0),
    "feed_http_p99_ms_pinhole": ("<", 25.0),
    "feed_http_req_per_s_pinhole": (">=", 1000.0),
    "feed_http_p99_ms_mastodon": ("<", 25.0),
    "feed_http_req_per_s_mastodon": (">=", 1000.0),
}
STRATEGIES: Final = ("push", "pull", "hybrid")
REDIS_URL_DEFAULT: Final = "redis://127.0.0.1:6379/0"
FULL_USERS: Final = 100_000
FANOUT_THRESHOLD_FULL: Final = 10_000
FANOUT_AUTHOR_FULL: Final = 5_000
CELEBRITY_FULL: Final = 50_000
ZIPF_S: Final = 1.05
PAGE_LIMIT: Final = 20
READS_PER_POST: Final = 100
BATCH_ROWS: Final = 5_000
MEMORY_TIMELINES: Final = 5
ORACLE_READERS: Final = 50
SEED: Final = 20260101


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    follow_draws: int
    backlog_posts: int
    readers: int
    posts: int
    concurrency: int
    # The HTTP phase (bench/feed_http.py): wrk connections, and seconds of load per API;
    # the API's processes on its one port ([api] processes); seconds of the same load run
    # untimed first (settling), reported apart.
    http_connections: int
    http_seconds: float
    http_api_processes: int
    http_settle_seconds: float

    @property
    def scale(self) -> float:
        return self.users / FULL_USERS

    @property
    def fanout_threshold(self) -> int:
        return max(2, round(FANOUT_THRESHOLD_FULL * self.scale))

    @property
    def fanout_author_followers(self) -> int:
        return max(2, round(FANOUT_AUTHOR_FULL * self.scale))

    @property
    def reads(self) -> int:
        return self.posts * READS_PER_POST


QUICK: Final = Plan(
    users=3_000,
    follow_draws=25,
    backlog_posts=6_000,
    readers=300,
    posts=10,
    concurrency=16,
    http_connections=8,
    http_seconds=5.0,
    http_api_processes=2,
    http_settle_seconds=2.0,
)
FULL: Final = Plan(
    users=FULL_USERS,
    follow_draws=25,
    backlog_posts=200_000,
    readers=2_000,
    posts=100,
    concurrency=16,
    http_connections=8,
    http_seconds=30.0,
    http_api_processes=2,
    http_settle_seconds=10.0,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CountingHotStore:
    """A hot store that records every add(): (when, keys, how many lists took it)."""

    def __init__(self, inner: RedisHotStore) -> None:
        self.inner = inner
        self.adds: list[tuple[float, Sequence[str], int]] = []

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def create(self, key: str, *, ttl_s: float) -> bool:
        return await self.inner.create(key, ttl_s=ttl_s)

    async def add(
        self,
        keys: Sequence[str],
        entries: Sequence[Entry],
        *,
        cap: int,
        complete: bool | None = None,
    ) -> int:
        took = await self.inner.add(keys, entries, cap=cap, complete=complete)
        self.adds.append((time.perf_counter(), list(keys), took))
        return took

    async def remove(self, keys: Sequence[str], entries: Sequence[Entry]) -> None:
        await self.inner.remove(keys, entries)

    async def remove_author(self, key: str, author_id: int) -> int:
        return await self.inner.remove_author(key, author_id)

    async def page(self, key: str, *, before: int | None, count: int) -> list[Entry] | None:
        return await self.inner.page(key, before=before, count=count)

    async def pages(self, reads: Sequence[Read]) -> list[Slice | None]:
        return await self.inner.pages(reads)

    async def touch(self, key: str, *, ttl_s: float) -> None:
        await self.inner.touch(key, ttl_s=ttl_s)

    async def delete(self, *keys: str) -> None:
        await self.inner.delete(*keys)

    async def size(self, key: str) -> int:
        return await self.inner.size(key)

    async def memory_bytes(self, key: str) -> int | None:
        return await self.inner.memory_bytes(key)

    async def close(self) -> None:
        await self.inner.close()


# -- the graph -------------------------------------------------------------------------------


@dataclass(slots=True)
class Graph:
    user_ids: np.ndarray  # index -> user id
    follower_idx: np.ndarray  # follows rows, as user indexes
    followee_idx: np.ndarray
    follower_count: np.ndarray  # per user index
    following_count: np.ndarray

    def followers_of(self, index: int) -> list[int]:
        return [int(self.user_ids[i]) for i in self.follower_idx[self.followee_idx == index]]

    def describe(self, plan: Plan) -> dict[str, Any]:
        fc = self.follower_count
        top = np.sort(fc)[::-1]
        return {
            "users": plan.users,
            "follows": len(self.follower_idx),
            "follow_draws_per_user": plan.follow_draws,
            "zipf_exponent": ZIPF_S,
            "backlog_posts": plan.backlog_posts,
            "followers_max": int(top[0]),
            "followers_top10": [int(x) for x in top[:10]],
            "followers_median": float(np.median(fc)),
            "following_mean": round(float(self.following_count.mean()), 1),
            "accounts_over_50000_followers": int((fc > 50_000).sum()),
            "accounts_at_or_over_fanout_threshold": int((fc >= plan.fanout_threshold).sum()),
        }


def now_ms() -> int:
    """Milliseconds since the id epoch (what an id made now holds)."""
    return time.time_ns() // 1_000_000 - ids.EPOCH_UNIX_MS


def make_graph(plan: Plan, rng: np.random.Generator) -> Graph:
    n = plan.users
    weights = 1.0 / np.arange(1, n + 1) ** ZIPF_S
    weights /= weights.sum()
    order = rng.permutation(n)  # popularity rank -> user index
    draws = order[rng.choice(n, size=(n, plan.follow_draws), p=weights)].ravel()
    follower = np.repeat(np.arange(n, dtype=np.int64), plan.follow_draws)
    keep = follower != draws
    code = np.unique(follower[keep] * n + draws[keep])
    follower_idx, followee_idx = code // n, code % n
    # Ids made as if the accounts had signed up one a millisecond, ending a day ago.
    base_ms = now_ms() - 86_400_000 - n
    user_ids = np.array([ids.compose(base_ms + i, 1, 0) for i in range(n)], dtype=np.int64)
    return Graph(
        user_ids=user_ids,
        follower_idx=follower_idx,
        followee_idx=followee_idx,
        follower_count=np.bincount(followee_idx, minlength=n),
        following_count=np.bincount(follower_idx, minlength=n),
    )


async def load_graph(db: Database, graph: Graph, plan: Plan, rng: np.random.Generator) -> None:
    now = time.time()
    n = plan.users
    # Backlog posts spread over the last week (never before the id epoch).
    span_ms = min(7 * 86_400_000, now_ms() - 1)
    start_ms = now_ms() - span_ms
    step_ms = max(1, span_ms // max(1, plan.backlog_posts))
    authors = rng.integers(0, n, size=plan.backlog_posts)
    post_count = np.bincount(authors, minlength=n)
    user_rows = [
        {
            "user_id": int(graph.user_ids[i]),
            "username": f"bench{i}",
            "email": None,
            "password_hash": "bench-not-a-hash",
            "full_name": f"Bench {i}",
            "bio": "",
            "avatar_media_id": None,
            "is_private": False,
            "is_verified": False,
            "is_celebrity": False,
            "follower_count": int(graph.follower_count[i]),
            "following_count": int(graph.following_count[i]),
            "post_count": int(post_count[i]),
            "created_unix_s": now - 365 * 86400,
            "updated_unix_s": now,
            "active_unix_s": now,
        }
        for i in range(n)
    ]
    await _insert(db, users, user_rows)
    uid = graph.user_ids
    follow_rows = [
        {"follower_id": int(uid[a]), "followee_id": int(uid[b]), "created_unix_s": now}
        for a, b in zip(graph.follower_idx.tolist(), graph.followee_idx.tolist(), strict=True)
    ]
    await _insert(db, follows, follow_rows)
    post_rows = []
    for j, a in enumerate(authors.tolist()):
        ms = start_ms + j * step_ms
        post_rows.append(
            {
                "post_id": ids.compose(ms, 2, 0),
                "author_id": int(uid[a]),
                "caption": "",
                "location": None,
                "status": "live",
                "like_count": 0,
                "comment_count": 0,
                "created_unix_s": (ms + ids.EPOCH_UNIX_MS) / 1000,
                "deleted_unix_s": None,
            }
        )
    await _insert(db, posts, post_rows)


async def _insert(db: Database, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH_ROWS):
        async with db.transaction(lock="social") as conn:
            await conn.execute(table.insert(), rows[i : i + BATCH_ROWS])


# -- Redis helpers ---------------------------------------------------------------------------


async def check_redis(url: str) -> None:
    import redis.asyncio as aioredis

    client: Any = aioredis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    except Exception as e:
        raise SystemExit(f"pinhole bench feed: Redis unreachable at {url}: {e}") from None
    finally:
        await client.aclose()


async def create_timelines(hot: RedisHotStore, user_ids: Sequence[int], *, ttl_s: float) -> None:
    """Makes the (empty) timelines of many users at once, as HotStore.create does one."""
    for i in range(0, len(user_ids), 1000):
        async with hot.redis.pipeline(transaction=False) as pipe:
            for u in user_ids[i : i + 1000]:
                k = hot.prefix + timeline_key(u)
                pipe.zadd(k, {SENTINEL: SENTINEL_SCORE}, nx=True)
                pipe.pexpire(k, int(ttl_s * 1000))
            await pipe.execute()


async def holding(hot: RedisHotStore, user_ids: Sequence[int], entry: Entry) -> int:
    """How many of these users' timelines hold the entry."""
    member = encode(entry)
    n = 0
    for i in range(0, len(user_ids), 1000):
        async with hot.redis.pipeline(transaction=False) as pipe:
            for u in user_ids[i : i + 1000]:
                pipe.zscore(hot.prefix + timeline_key(u), member)
            n += sum(1 for s in await pipe.execute() if s is not None)
    return n


async def delete_prefix(hot: RedisHotStore) -> int:
    """SCAN + DEL of every key under the store's prefix; returns how many."""
    gone = 0
    batch: list[bytes] = []
    async for key in hot.redis.scan_iter(match=hot.prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            gone += int(await hot.redis.delete(*batch))
            batch = []
    if batch:
        gone += int(await hot.redis.delete(*batch))
    return gone


# -- the measurements ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def reads(
    feed: Feed, viewers: list[int], concurrency: int
) -> tuple[list[float], float, float, int]:
    """Reads the first page of each viewer with `concurrency` tasks; returns the latencies,
    the wall time, this process's CPU time and the number of empty pages."""
    latencies: list[float] = []
    empty = 0
    queue = iter(viewers)

    async def worker() -> None:
        nonlocal empty
        for viewer in queue:
            t = time.perf_counter()
            page = await feed.page(viewer, Cursor(), PAGE_LIMIT)
            latencies.append(time.perf_counter() - t)
            empty += not page.entries

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0, time.process_time() - cpu0, empty


async def post(db: Database, id_gen: ids.IdGenerator, feed: Feed, author: int) -> int:
    """A live post and its publish job in one transaction, then the author's nudge."""
    post_id = id_gen.next_id()
    async with db.transaction(lock="social") as conn:
        await conn.execute(
            posts.insert().values(
                post_id=post_id,
                author_id=author,
                caption="",
                location=None,
                status="live",
                like_count=0,
                comment_count=0,
                created_unix_s=time.time(),
                deleted_unix_s=None,
            )
        )
        await conn.execute(
            users.update()
            .where(users.c.user_id == author)
            .values(post_count=users.c.post_count + 1)
        )
        await jobs.enqueue(
            conn,
            id_gen,
            "publish",
            post_id=post_id,
            author_id=author,
            attempts_max=feed.config.attempts_max,
        )
    await feed.posted(post_id, author)
    return post_id


async def one_post_fanout(
    db: Database,
    id_gen: ids.IdGenerator,
    feed: Feed,
    hot: CountingHotStore,
    author: int,
    followers: list[int],
) -> dict[str, Any]:
    """One post by `author`, every follower's timeline existing: the list writes it made
    (the author's own timeline aside), the seconds from its commit to 99% of the followers'
    timelines holding it (None when fewer took it), and a ZSCORE check."""
    await create_timelines(hot.inner, followers, ttl_s=feed.ttl_s)
    hot.adds.clear()
    t0 = time.perf_counter()
    post_id = await post(db, id_gen, feed, author)
    await FanoutRunner(feed).drain()
    done_s = time.perf_counter() - t0
    own = [timeline_key(author)]
    writes = 0
    at_99: float | None = None
    need = math.ceil(0.99 * len(followers))
    for when, keys, took in hot.adds:
        if list(keys) == own:
            continue
        writes += took
        if at_99 is None and writes >= need:
            at_99 = when - t0
    held = await holding(hot.inner, followers, (post_id, author))
    return {
        "followers": len(followers),
        "writes": writes,
        "seconds_to_99pct": None if at_99 is None else round(at_99, 4),
        "seconds_to_drained": round(done_s, 4),
        "timelines_holding_post": held,
    }


async def memory_per_entry(url: str, prefix: str, graph: Graph) -> dict[str, Any]:
    hot = RedisHotStore(url, prefix=prefix)
    id_gen = ids.IdGenerator(4)
    rng = random.Random(SEED)
    try:
        total_bytes = total_entries = 0
        for t in range(MEMORY_TIMELINES):
            key = timeline_key(10_000 + t)
            await hot.create(key, ttl_s=3600)
            entries = [
                (id_gen.next_id(), int(graph.user_ids[rng.randrange(len(graph.user_ids))]))
                for _ in range(800)
            ]
            await hot.add([key], entries, cap=800)
            total_bytes += await hot.memory_bytes(key) or 0
            total_entries += await hot.size(key)
        return {
            "timelines": MEMORY_TIMELINES,
            "entries": total_entries,
            "bytes": total_bytes,
            "bytes_per_entry": round(total_bytes / total_entries, 1),
        }
    finally:
        await delete_prefix(hot)
        await hot.close()


async def set_celebrities(db: Database, strategy: str, threshold: int) -> None:
    """Hybrid starts in its steady state (every account at or above the threshold marked);
    push and pull ignore the flag, which is cleared for them."""
    async with db.transaction(lock="social") as conn:
        flag: Any = users.c.follower_count >= threshold if strategy == "hybrid" else sa.false()
        await conn.execute(users.update().values(is_celebrity=flag))


async def run_strategy(
    strategy: str,
    *,
    db: Database,
    plan: Plan,
    graph: Graph,
    redis_url: str,
    prefix: str,
    rng: random.Random,
) -> dict[str, Any]:
    await set_celebrities(db, strategy, plan.fanout_threshold)
    config = FeedConfig(
        redis_url=redis_url,
        redis_prefix=prefix,
        strategy=strategy,
        fanout_threshold=plan.fanout_threshold,
    )
    inner = RedisHotStore(redis_url, prefix=prefix)
    hot = CountingHotStore(inner)
    feed = Feed(db, hot, config)
    id_gen = ids.IdGenerator(5 + STRATEGIES.index(strategy))
    uids = [int(u) for u in graph.user_ids]
    readers = rng.sample(uids, plan.readers)
    out: dict[str, Any] = {"redis_prefix": prefix}
    try:
        lat, wall, _, empty = await reads(feed, readers, plan.concurrency)
        out["warmup"] = {
            "reads": len(lat),
            "reads_per_s": round(len(lat) / wall, 1),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
            "empty_pages": empty,
        }
        log(f"{strategy}: warm-up {len(lat)} reads, {len(lat) / wall:.0f}/s")

        t0 = time.perf_counter()
        runner = FanoutRunner(feed)
        for _ in range(plan.posts):
            await post(db, id_gen, feed, rng.choice(uids))
            await runner.drain()
        wall = time.perf_counter() - t0
        out["posting"] = {
            "posts": plan.posts,
            "posts_per_s_with_fanout": round(plan.posts / wall, 1),
            "jobs_failed": runner.failed,
        }

        viewers = [rng.choice(readers) for _ in range(plan.reads)]
        freeze_setup()
        with FullCollections() as full:
            lat, wall, cpu, empty = await reads(feed, viewers, plan.concurrency)
        out["reads"] = {
            "reads": len(lat),
            "concurrency": plan.concurrency,
            "feed_reads_per_s": round(len(lat) / wall, 1),
            "feed_p50_ms": round(percentile(lat, 0.50) * 1000, 2),
            "feed_p99_ms": round(percentile(lat, 0.99) * 1000, 2),
            "cpu_ms_per_read": round(cpu / len(lat) * 1000, 3),
            "empty_pages": empty,
            "gc_full": full.statistics(),
        }
        log(
            f"{strategy}: {len(lat)} reads, {len(lat) / wall:.0f}/s, "
            f"p99 {percentile(lat, 0.99) * 1000:.1f} ms, CPU {cpu / len(lat) * 1000:.2f} ms/read"
        )

        oracle = Feed(db, MemoryHotStore(), FeedConfig(strategy="pull"))
        equal = 0
        for viewer in readers[:ORACLE_READERS]:
            mine = await feed.page(viewer, Cursor(), PAGE_LIMIT)
            truth = await oracle.page(viewer, Cursor(), PAGE_LIMIT)
            equal += mine.entries == truth.entries
        out["oracle"] = {"readers": min(ORACLE_READERS, len(readers)), "pages_equal": equal}

        fc = graph.follower_count
        five = int(np.argmin(np.abs(fc - plan.fanout_author_followers)))
        out["fanout_5k"] = await one_post_fanout(
            db, id_gen, feed, hot, int(graph.user_ids[five]), graph.followers_of(five)
        )
        # Full: the account nearest above 50,000 followers; quick: the largest one.
        over = np.flatnonzero(fc >= CELEBRITY_FULL) if plan.scale >= 1 else np.array([], int)
        celeb = int(over[np.argmin(fc[over])]) if len(over) else int(np.argmax(fc))
        out["celebrity_post"] = await one_post_fanout(
            db, id_gen, feed, hot, int(graph.user_ids[celeb]), graph.followers_of(celeb)
        )
        log(
            f"{strategy}: fan-out {out['fanout_5k']}, celebrity post {out['celebrity_post']}",
        )
    finally:
        out["redis_keys_deleted"] = await delete_prefix(inner)
        await hot.close()
    return out


@contextlib.asynccontextmanager
async def bench_database(database_url: str | None, scratch: Path) -> AsyncIterator[Database]:
    if database_url:
        schema = f"bench_feed_{os.getpid()}_{secrets.token_hex(3)}"
        db = await open_database(database_url, schema=schema, pool_connections_max=20)
    else:
        schema = None
        db = await open_database(scratch / "feed.sqlite3")
    try:
        for component, migrations in (
            (transformer_schema.COMPONENT, transformer_schema.MIGRATIONS),
            (social_schema.COMPONENT, social_schema.MIGRATIONS),
            (feed_schema.COMPONENT, feed_schema.MIGRATIONS),
            (search_schema.COMPONENT, search_schema.MIGRATIONS),
        ):
            await migrate(db, component, migrations)
        yield db
    finally:
        if schema is not None:
            async with db.transaction(lock="drop_schema") as conn:
                await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await db.close()


async def run(
    plan: Plan, *, redis_url: str, database_url: str | None, scratch: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    await check_redis(redis_url)
    np_rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    graph = make_graph(plan, np_rng)
    graph_doc = graph.describe(plan)
    log(f"graph: {graph_doc}")
    token = f"bench-feed-{os.getpid()}-{secrets.token_hex(3)}"
    async with bench_database(database_url, scratch) as db:
        await load_graph(db, graph, plan, np_rng)
        graph_doc["database"] = db.dialect
        graph_doc["build_s"] = round(time.perf_counter() - t0, 1)
        log(f"graph loaded into {db.dialect} in {graph_doc['build_s']} s")
        detail: dict[str, Any] = {}
        for strategy in STRATEGIES:
            detail[strategy] = await run_strategy(
                strategy,
                db=db,
                plan=plan,
                graph=graph,
                redis_url=redis_url,
                prefix=f"{token}-{strategy}:",
                rng=random.Random(SEED),  # the same readers and authors for each strategy
            )
        detail["http"] = await http_phase(
            db,
            plan,
            graph,
            redis_url=redis_url,
            prefix=f"{token}-http:",
            database_url=database_url or sqlite_url(scratch / "feed.sqlite3"),
        )
    detail["memory"] = await memory_per_entry(redis_url, f"{token}-memory:", graph)
    return graph_doc, detail


async def http_phase(
    db: Database, plan: Plan, graph: Graph, *, redis_url: str, prefix: str, database_url: str
) -> dict[str, Any]:
    """The hydrated feed over HTTP from real API processes (bench/feed_http.py), hybrid,
    the same readers as the strategies; its Redis keys deleted after."""
    await set_celebrities(db, "hybrid", plan.fanout_threshold)
    readers = random.Random(SEED).sample([int(u) for u in graph.user_ids], plan.readers)
    try:
        return await feed_http.run_http(
            db,
            readers,
            database_url=database_url,
            database_schema=db.schema,
            redis_url=redis_url,
            prefix=prefix,
            fanout_threshold=plan.fanout_threshold,
            connections=plan.http_connections,
            seconds=plan.http_seconds,
            processes=plan.http_api_processes,
            settle_seconds=plan.http_settle_seconds,
        )
    finally:
        hot = RedisHotStore(redis_url, prefix=prefix)
        try:
            await delete_prefix(hot)
        finally:
            await hot.close()


def figures_of(detail: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    figures: dict[str, Any] = {}
    strategies: dict[str, Any] = {}
    for s in STRATEGIES:
        d = detail[s]
        fan = d["fanout_5k"]
        strategies[s] = {
            "feed_p99_ms": d["reads"]["feed_p99_ms"],
            "feed_reads_per_s": d["reads"]["feed_reads_per_s"],
            "cpu_ms_per_read": d["reads"]["cpu_ms_per_read"],
            "writes_per_celebrity_post": d["celebrity_post"]["writes"],
            "fanout_5k_s": fan["seconds_to_99pct"] if s != "pull" else None,
        }
        figures[f"feed_p99_ms_{s}"] = d["reads"]["feed_p99_ms"]
        figures[f"feed_reads_per_s_{s}"] = d["reads"]["feed_reads_per_s"]
        figures[f"cpu_ms_per_read_{s}"] = d["reads"]["cpu_ms_per_read"]
        figures[f"writes_per_celebrity_post_{s}"] = d["celebrity_post"]["writes"]
    for s in ("push", "hybrid"):
        got = detail[s]["fanout_5k"]["seconds_to_99pct"]
        # Fewer than 99% took it: the figure is missing, not made up (the table says n/a).
        if got is not None:
            figures["fanout_5k_s" if s == "hybrid" else "fanout_5k_s_push"] = got
    rates = {s: strategies[s]["feed_reads_per_s"] for s in STRATEGIES}
    figures["hybrid_vs_pull_reads"] = round(rates["hybrid"] / rates["pull"], 2)
    figures["hybrid_vs_push_reads"] = round(rates["hybrid"] / rates["push"], 2)
    figures["redis_bytes_per_timeline_entry"] = detail["memory"]["bytes_per_entry"]
    figures.update(feed_http.figures_of(detail["http"], strategies["hybrid"]))
    return figures, strategies


def write_strategy_plot(doc: dict[str, Any], path: Path) -> None:
    """Bars per strategy: p99, read rate, CPU per read, writes per celebrity post."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = doc["strategies"]
    names = list(STRATEGIES)
    colours = ["#e76f51", "#8d99ae", "#2a9d8f"]
    panels = [
        ("feed_p99_ms", "first page p99 (ms)", 20.0, False),
        ("feed_reads_per_s", "first pages read / s", 1000.0, False),
        ("cpu_ms_per_read", "bench CPU per read (ms)", None, False),
        ("writes_per_celebrity_post", "list writes per celebrity post", None, True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 4.5))
    for ax, (field, title, goal, log_scale) in zip(axes, panels, strict=True):
        values = [float(strategies[s][field]) for s in names]
        bars = ax.bar(names, [max(v, 0.5) if log_scale else v for v in values], color=colours)
        if not log_scale:  # headroom for the labels and the legend above the bars
            ax.set_ylim(0, max([*values, goal or 0]) * 1.25)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                f"{v:g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center"
            )
        if goal is not None:
            ax.axhline(goal, color="black", linewidth=1, linestyle="--", label=f"goal {goal:g}")
            ax.legend(loc="upper right")
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(title)
    graph = doc["graph"]
    fig.suptitle(
        f"{doc['command']} ({doc['mode']}, {doc['date']}): {graph['users']:,} users, "
        f"{graph['follows']:,} follows, {graph['database']}; "
        f"fanout_5k_s {doc['figures'].get('fanout_5k_s', 'n/a')}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(
    *,
    quick: bool,
    json_path: Path | None,
    work_dir: Path | None,
    plot_path: Path | None,
    redis_url: str = REDIS_URL_DEFAULT,
    database_url: str | None = None,
    api_processes: int | None = None,
) -> dict[str, Any]:
    """`api_processes`: the HTTP phase's API processes instead of the plan's."""
    plan = QUICK if quick else FULL
    if api_processes is not None:
        plan = replace(plan, http_api_processes=api_processes)
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-feed-", dir=base) as scratch:
        # On uvloop, as the API process serves these reads.
        graph_doc, detail = uvloop.run(
            run(plan, redis_url=redis_url, database_url=database_url, scratch=Path(scratch))
        )
    figures, strategies = figures_of(detail)
    doc = {
        **run_header("feed", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "figures": figures,
        "strategies": strategies,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "graph": graph_doc,
        "detail": detail,
        "plan": {
            **asdict(plan),
            "reads": plan.reads,
            "reads_per_post": READS_PER_POST,
            "page_limit": PAGE_LIMIT,
            "fanout_threshold": plan.fanout_threshold,
            "fanout_author_followers_target": plan.fanout_author_followers,
            "celebrity_followers_target": round(CELEBRITY_FULL * plan.scale),
            "scale": plan.scale,
            "scaled": (
                None
                if not quick
                else f"quick: thresholds scaled by {plan.scale:g} (users / {FULL_USERS:,}): "
                f"fanout_5k_s is for a {plan.fanout_author_followers}-follower author, "
                f"writes_per_celebrity_post for the largest author"
            ),
            "redis_url": redis_url,
            "http": (
                f"the hydrated first page ({feed_http.PAGE_LIMIT} posts, one photo each) over "
                f"HTTP from `pinhole api serve` as {plan.http_api_processes} process(es) on "
                f"one port, hybrid, {plan.http_connections} "
                f"wrk connections (closed loop: req/s is the rate the p99 was taken at), "
                f"{plan.http_seconds:g} s per API, after {plan.http_settle_seconds:g} s of "
                f"the same load untimed (detail.http.<api>.settle)"
                + (
                    "; quick mode on a shared machine: the goal figure is to be taken in full "
                    "mode on a quiet one"
                    if quick
                    else ""
                )
            ),
        },
    }
    publish(doc, GOALS, json_path=json_path, plot_path=None)
    if plot_path is not None:
        write_strategy_plot(doc, plot_path)
    return doc
