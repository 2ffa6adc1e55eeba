"""`pinhole bench social`: the social figures of one run, direct messages and stories.

1. The DM and notification figures of `pinhole bench dm` (bench/dm_bench.py's `run`: a
   Mosquitto from pinhole's generated configuration, the API in its own process, paho
   clients): dm_delivery_p99_ms at dm_sends_per_s (open loop, a fixed offered rate), the
   saturated (closed-loop) figures, notification_delivery_p99_ms, the raw MQTT baseline.
2. stories_tray_p99_ms: a population of `users` accounts (100,000; quick: 5,000) whose
   follows are power-law (each account follows a number of accounts drawn from a Pareto
   law, chosen with probability falling as a power of their popularity rank), a share of
   them with live stories; the tray (feed/story_tray.py, what GET /api/v1/stories/tray
   calls) of sampled viewers, read once cold (built from SQL, stories_tray_build_p99_ms)
   and then warm (the cached tray, the block check in SQL and the seen state in Redis).
   The population is written by plain sqlite3 executemany (bulk_insert; 100,000 accounts
   and about 3.4 million follows in about two minutes on a loaded two-core machine).
   The metadata is a SQLite file, the story store the Redis at REDIS_URL (keys under a
   per-run prefix, deleted after).
3. story_views_per_s and sql_writes_per_view: `views` story views (a fifth of them
   repeats, popularity skewed so that one story takes a large share), each the path of
   POST /api/v1/stories/{id}/seen (the visibility check in SQL, then one hot-store call),
   `concurrency` at once, with the batched flusher running; sql_writes_per_view is the
   flusher's write transactions over the views, the viewer rows all in SQL at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from bench import dm_bench
from bench.report import Goals, publish, run_header
from common.db import Database, migrate, open_database
from common.ids import IdGenerator
from feed import schema as feed_schema
from feed.story_store import RedisStoryStore
from feed.story_tray import read
from feed.story_views import ViewCounter
from social import messages_schema, stories, stories_schema, story_reads
from social import schema as social_schema
from social.config import SocialConfig
from social.errors import NotVisible
from social.schema import follows, users
from social.stories_schema import STORY_LIFETIME_S
from transformer import schema as media_schema

GOALS: Final[Goals] = {
    **dm_bench.GOALS,
    "stories_tray_p99_ms": ("<", 10.0),
    "sql_writes_per_view": ("<", 0.1),
}
REDIS_URL: Final = dm_bench.REDIS_URL
INSERT_ROWS_MAX: Final = 100_000  # rows per bulk insert transaction
PARETO_ALPHA: Final = 1.2  # follows per account: heavy-tailed
POPULARITY_EXPONENT: Final = 1.0  # followee chosen with weight rank^-exponent
PRIVATE_EVERY: Final = 10  # every tenth account is private


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    follows_mean: int
    follows_max: int
    story_share: float  # accounts with live stories
    tray_viewers: int
    views: int
    concurrency: int


QUICK: Final = Plan(5_000, 60, 1_000, 0.3, 300, 20_000, 32)
FULL: Final = Plan(100_000, 60, 5_000, 0.3, 1_000, 200_000, 64)


def log(message: str) -> None:
    print(f"[bench social] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    return dm_bench.percentile(values, q)


def follow_rows(
    plan: Plan, rng: random.Random, user_ids: list[int], now: float
) -> Iterator[tuple[int, int, float]]:
    """(follower, followee, created) rows, follower by follower (ascending, as the primary
    key), each follower's followees distinct: Pareto out-degrees, power-law popularity."""
    n = plan.users
    weights = [1.0 / (rank + 1) ** POPULARITY_EXPONENT for rank in range(n)]
    cumulative = list(itertools.accumulate(weights))
    order = list(range(n))
    rng.shuffle(order)  # popularity rank -> account, unrelated to ids
    scale = plan.follows_mean * (PARETO_ALPHA - 1) / PARETO_ALPHA
    for follower in range(n):
        k = min(plan.follows_max, n - 1, max(1, int(scale * rng.paretovariate(PARETO_ALPHA))))
        picked = set(rng.choices(order, cum_weights=cumulative, k=k))
        picked.discard(follower)
        follower_id = user_ids[follower]
        for followee in sorted(picked):
            yield follower_id, user_ids[followee], now


def bulk_insert(path: Path, table: sa.Table, rows: Iterable[tuple[Any, ...]]) -> int:
    """Inserts rows (tuples in the table's column order) with plain sqlite3 executemany,
    INSERT_ROWS_MAX to a transaction: a population of millions of follows in a minute or
    two, which SQLAlchemy's executemany through aiosqlite (a dict a row) did not reach.
    Synchronous off: this is a scratch database, rebuilt by every run. Runs on a thread."""
    columns = ", ".join(c.name for c in table.columns)
    marks = ", ".join("?" * len(table.columns))
    statement = f"INSERT INTO {table.name} ({columns}) VALUES ({marks})"
    count = 0
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        it = iter(rows)
        while batch := list(itertools.islice(it, INSERT_ROWS_MAX)):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(statement, batch)
            conn.execute("COMMIT")
            count += len(batch)
    finally:
        conn.close()
    return count


async def populate(
    path: Path, plan: Plan, rng: random.Random, now: float
) -> tuple[list[int], list[stories.Story], int]:
    ids = IdGenerator(1)
    user_ids = [ids.next_id() for _ in range(plan.users)]
    user_rows = [
        {
            "user_id": u, "username": f"u{i}", "email": None, "password_hash": "-",
            "full_name": "", "bio": "", "avatar_media_id": None,
            "is_private": i % PRIVATE_EVERY == 0, "is_verified": False, "is_celebrity": False,
            "follower_count": 0, "following_count": 0, "post_count": 0,
            "created_unix_s": now, "updated_unix_s": now, "active_unix_s": now,
        }
        for i, u in enumerate(user_ids)
    ]  # fmt: skip
    await asyncio.to_thread(
        bulk_insert, path, users, (tuple(row[c.name] for c in users.columns) for row in user_rows)
    )
    follows_made = await asyncio.to_thread(
        bulk_insert, path, follows, follow_rows(plan, rng, user_ids, now)
    )
    log(f"{follows_made} follows")
    posted: list[stories.Story] = []
    for u in rng.sample(user_ids, int(plan.users * plan.story_share)):
        for _ in range(rng.randint(1, 3)):
            created = now - rng.uniform(60, STORY_LIFETIME_S - 3600)
            posted.append(
                stories.Story(
                    story_id=ids.next_id(), author_id=u, media_id=ids.next_id(),
                    media_type="image", can_reply=True,
                    audience="close_friends" if rng.random() < 0.05 else "followers",
                    created_unix_s=created, expires_unix_s=created + STORY_LIFETIME_S,
                    archived_unix_s=None, reclaimed_unix_s=None,
                )
            )  # fmt: skip
    story_rows = [asdict(s) for s in posted]
    await asyncio.to_thread(
        bulk_insert,
        path,
        stories_schema.stories,
        (tuple(row[c.name] for c in stories_schema.stories.columns) for row in story_rows),
    )
    return user_ids, posted, follows_made


async def tray_reads(
    db: Database, store: RedisStoryStore, config: SocialConfig, viewers: list[int]
) -> tuple[list[float], list[float], int]:
    cold: list[float] = []
    warm: list[float] = []
    authors = 0
    for viewer in viewers:
        t0 = time.perf_counter()
        tray = await read(db, store, config, viewer)
        cold.append((time.perf_counter() - t0) * 1000)
        assert not tray.cached
        authors += len(tray.authors)
    for viewer in viewers:
        t0 = time.perf_counter()
        tray = await read(db, store, config, viewer)
        warm.append((time.perf_counter() - t0) * 1000)
        assert tray.cached
    return cold, warm, authors


async def story_views(
    db: Database,
    store: RedisStoryStore,
    config: SocialConfig,
    plan: Plan,
    user_ids: list[int],
    posted: list[stories.Story],
    rng: random.Random,
) -> dict[str, Any]:
    private = set(user_ids[::PRIVATE_EVERY])
    public = [s for s in posted if s.audience == "followers" and s.author_id not in private]
    # Popularity: the first story of a public account takes about a tenth of the views;
    # views of private accounts' stories are refused unless the viewer follows them.
    weights = [1.0 / (rank + 1) for rank in range(len(public))]
    picks: list[tuple[stories.Story, int]] = []
    while len(picks) < plan.views:
        if picks and rng.random() < 0.2:
            picks.append(rng.choice(picks))  # a repeat view
        else:
            picks.append((rng.choices(public, weights=weights)[0], rng.choice(user_ids)))
    counter = ViewCounter(db, store, config)
    stop = asyncio.Event()
    flusher = asyncio.create_task(counter.run(stop))
    queue = iter(picks)
    refused = 0

    async def worker() -> None:
        nonlocal refused
        for story, viewer in queue:
            now = time.time()
            try:
                seen = await story_reads.visible_live(db, viewer, story.story_id, now=now)
            except NotVisible:
                refused += 1  # a private author the viewer does not follow
                continue
            await counter.mark_seen(seen, viewer, now=now)

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    await flusher
    await counter.flush_once()
    stats = counter.statistics()
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(sa.select(sa.func.count()).select_from(stories_schema.story_views))
        ).scalar_one()
    top = public[0].story_id
    return {
        "views": stats.views,
        "refused_not_visible": refused,
        "first_views": stats.first_views,
        "sql_writes": stats.sql_writes,
        "rows_in_sql": int(rows),
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "top_story_views": (await store.view_counts([top])).get(top, 0),
    }


async def run_stories(plan: Plan, scratch: Path) -> dict[str, Any]:
    rng = random.Random(20261206)
    config = SocialConfig(story_views_flush_interval_ms=200)
    db = await open_database(scratch / "meta.sqlite3")
    store = RedisStoryStore(REDIS_URL, prefix=f"bench-social-{uuid.uuid4().hex[:8]}:")
    try:
        for component, migrations in (
            (media_schema.COMPONENT, media_schema.MIGRATIONS),
            (social_schema.COMPONENT, social_schema.MIGRATIONS),
            (feed_schema.COMPONENT, feed_schema.MIGRATIONS),
            (messages_schema.COMPONENT, messages_schema.MIGRATIONS),
            (stories_schema.COMPONENT, stories_schema.MIGRATIONS),
        ):
            await migrate(db, component, migrations)
        log(f"population: {plan.users} accounts")
        t0 = time.perf_counter()
        user_ids, posted, follows_made = await populate(
            scratch / "meta.sqlite3", plan, rng, time.time()
        )
        populate_s = time.perf_counter() - t0
        log("tray reads")
        viewers = rng.sample(user_ids, plan.tray_viewers)
        cold, warm, authors = await tray_reads(db, store, config, viewers)
        log("story views")
        views = await story_views(db, store, config, plan, user_ids, posted, rng)
    finally:
        keys = [k async for k in store.redis.scan_iter(match=store.prefix + "*", count=1000)]
        for i in range(0, len(keys), 500):
            await store.redis.delete(*keys[i : i + 500])
        await store.close()
        await db.close()
    return {
        "population": {
            "users": plan.users,
            "follows": follows_made,
            "live_stories": len(posted),
            "populate_s": round(populate_s, 1),
        },
        "tray": {
            "viewers": len(viewers),
            "authors_per_tray": round(authors / max(1, len(viewers)), 1),
            "cold_p50_ms": percentile(cold, 0.5),
            "cold_p99_ms": percentile(cold, 0.99),
            "warm_p50_ms": percentile(warm, 0.5),
            "warm_p99_ms": percentile(warm, 0.99),
        },
        "views": views,
    }


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    dm_plan = dm_bench.QUICK if quick else dm_bench.FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-social-", dir=base) as scratch:
        (Path(scratch) / "dm").mkdir()
        (Path(scratch) / "stories").mkdir()
        dm_detail = asyncio.run(dm_bench.run(dm_plan, Path(scratch) / "dm"))
        detail = asyncio.run(run_stories(plan, Path(scratch) / "stories"))
    tray, views = detail["tray"], detail["views"]
    figures = {
        **dm_bench.figures_of(dm_detail),
        "stories_tray_p99_ms": round(tray["warm_p99_ms"], 3),
        "stories_tray_build_p99_ms": round(tray["cold_p99_ms"], 3),
        "stories_tray_users": plan.users,
        "story_views_per_s": round(views["views"] / views["elapsed_s"], 1),
        "sql_writes_per_view": round(views["sql_writes"] / max(1, views["views"]), 5),
        "story_view_cpu_us": round(views["cpu_s"] / max(1, views["views"]) * 1e6),
    }
    doc = {
        **run_header("social", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "figures": figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "plan": asdict(plan),
        "dm_plan": asdict(dm_plan),
        "detail": {**dm_detail, "stories": detail},
    }
    if quick:
        print(
            f"quick mode: the tray population is {plan.users} accounts, not "
            f"{FULL.users}; run without --quick for the 100,000-account figure"
        )
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
