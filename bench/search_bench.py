"""`pinhole bench search`: typeahead latency of the search service on both engines.

For each engine (SQLite FTS5 trigram; PostgreSQL tsvector + pg_trgm, a fresh schema) the
run bulk-loads synthetic accounts (syllable usernames, first and last names, power-law
follower counts), hashtags and places, has `pinhole search reindex`'s rebuild index them
(timed: reindex_s), and gives the viewer a few hundred followees. Then it times typeahead
requests as GET /api/v1/search?typeahead=true answers them, minus HTTP: the three kinds
(accounts, hashtags, places), ranked, blocks and relationships applied, one after another.
Queries mix prefixes of 2 to 6 characters, full-name words, and words with one typo
(a swap, a missing letter or a substitution).

Figures per engine E:
- typeahead_p99_ms_E (goal < 10 ms) and typeahead_p50_ms_E;
- like_prefix_p99_ms_E, the baseline of the same run: the plain query an application
  would write without a search index (`username LIKE 'q%' ORDER BY follower_count DESC
  LIMIT 10`, accounts only, no typos, no names);
- typeahead_over_like_p99_E: their ratio (the price of three ranked, fuzzy kinds);
- typeahead_cpu_ms_mean_E: this process's CPU time per typeahead request (the Python
  ranking, and on SQLite the database's own work too): what a loaded machine inflates
  least;
- typo_recall_at_10_E: the share of one-typo queries whose intended account is among the
  first 10 (the baseline finds none of them);
- reindex_s_E: the full rebuild.

The population's rows stay alive in this process for the whole run; they are frozen out of
the cyclic collector's sight before the timed requests (as an API process freezes its
start-up), and the full collections that ran during them are counted in the detail
(`gc_full_during_requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from bench.collector import FullCollections, freeze_setup
from bench.report import Goals, publish, run_header
from common.db import Database, migrate, open_database
from social import schema as social_schema
from social import search_index, search_schema
from social.schema import follows, users
from social.search import Search
from social.search_config import SearchConfig
from social.search_engines import KINDS
from transformer import schema as media_schema

GOALS: Final[Goals] = {
    "typeahead_p99_ms_sqlite": ("<", 10.0),
    "typeahead_p99_ms_postgresql": ("<", 10.0),
}
PG_URL: Final = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SEED: Final = 20261206
INSERT_BATCH_ROWS: Final = 5000


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


SYLLABLES: Final = _words(
    "ka ri to mi na lu be so fa de jo ha ne vi ra mo ti za el an or is us ul ba ko pe "
    "qui sa te do ma li ro gu wa ye xi"
)
FIRST_NAMES: Final = _words(
    "Margaret Robert Theodora Alexander Lucia Mateo Amara Jonas Ingrid Tomasz Priya "
    "Kenji Olivia Santiago Fatima Noah Chiara Dmitri Aisha Emil Sofia Rafael Hana "
    "Oskar Leila"
)
LAST_NAMES: Final = _words(
    "Hill Moreno Quinn Novak Okafor Lindqvist Tanaka Rossi Haddad Kowalski Fischer "
    "Silva Nakamura Byrne Costa Petrov Duarte Larsen Mensah Varga Castillo Ibrahim "
    "Sato Weber"
)
PLACE_WORDS: Final = _words(
    "Harbour Market Bridge Garden Tower Station Beach Museum Park Square Lighthouse "
    "Castle Cafe Library Canal Hill Abbey Pier Lake Forest"
)


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    hashtags: int
    places: int
    followees: int
    queries: int


FULL: Final = Plan(users=100_000, hashtags=20_000, places=5_000, followees=300, queries=1000)
QUICK: Final = Plan(users=5_000, hashtags=1_000, places=250, followees=50, queries=150)


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def _users(plan: Plan, rng: random.Random) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    now = time.time()
    while len(rows) < plan.users:
        name = _name(rng) + rng.choice(["", "_", "."]) + rng.choice(["", str(rng.randint(1, 99))])
        name = name.strip("._")[:30]
        if name in taken:
            continue
        taken.add(name)
        rows.append(
            {
                "user_id": 10_000 + len(rows),
                "username": name,
                "email": None,
                "password_hash": "x",
                "full_name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                "bio": "",
                "avatar_media_id": None,
                "is_private": rng.random() < 0.1,
                "is_verified": False,
                "is_celebrity": False,
                # Power law: most accounts have a handful of followers, a few millions.
                "follower_count": int(rng.paretovariate(1.1)) - 1,
                "following_count": 0,
                "post_count": rng.randint(0, 300),
                "created_unix_s": now,
                "updated_unix_s": now,
                "active_unix_s": now,
            }
        )
    return rows


def _queries(plan: Plan, rows: list[dict[str, Any]], rng: random.Random) -> list[tuple[str, int]]:
    """(query, the account meant or 0): prefixes, name words, one-typo words."""
    out: list[tuple[str, int]] = []
    while len(out) < plan.queries:
        row = rng.choice(rows)
        kind = rng.random()
        name = row["username"]
        if kind < 0.5:
            out.append((name[: rng.randint(2, min(6, len(name)))], 0))
        elif kind < 0.7:
            out.append((rng.choice(row["full_name"].split())[: rng.randint(3, 7)], 0))
        elif len(name) >= 6 and name.isalpha():
            i = rng.randrange(1, len(name) - 1)
            typo = rng.choice(
                [
                    name[:i] + name[i + 1] + name[i] + name[i + 2 :],  # a swap
                    name[:i] + name[i + 1 :],  # a missing letter
                    name[:i] + rng.choice("aeiou") + name[i + 1 :],  # a substitution
                ]
            )
            if typo != name:
                out.append((typo, row["user_id"]))
    return out


async def _load(db: Database, plan: Plan, rng: random.Random) -> tuple[list[dict[str, Any]], float]:
    for component in (media_schema, social_schema, search_schema):
        await migrate(db, component.COMPONENT, component.MIGRATIONS)
    rows = _users(plan, rng)
    tags = {
        _name(rng) + rng.choice(["", "life", "day", "art", "2026"])
        for _ in range(plan.hashtags * 2)
    }
    tag_rows = [
        {"tag": t, "post_count": int(rng.paretovariate(1.0))} for t in sorted(tags)[: plan.hashtags]
    ]
    place_rows = []
    for i in range(plan.places):
        name = f"{_name(rng).title()} {rng.choice(PLACE_WORDS)}"
        place_rows.append(
            {
                "place_id": 1_000_000 + i,
                "name": name,
                "name_key": name.lower(),
                "latitude": round(rng.uniform(-60, 60), 2),
                "longitude": round(rng.uniform(-180, 180), 2),
                "coordinate_decimals": 2,
                "created_by": rows[0]["user_id"],
                "created_unix_s": time.time(),
                "post_count": int(rng.paretovariate(1.0)),
            }
        )
    viewer = rows[0]["user_id"]
    followees = rng.sample(rows[1:], plan.followees)
    async with db.transaction() as conn:
        for table, batch in (
            (users, rows),
            (search_schema.hashtag_counts, tag_rows),
            (search_schema.places, place_rows),
        ):
            for i in range(0, len(batch), INSERT_BATCH_ROWS):
                await conn.execute(table.insert(), batch[i : i + INSERT_BATCH_ROWS])
        await conn.execute(
            follows.insert(),
            [
                {"follower_id": viewer, "followee_id": f["user_id"], "created_unix_s": 0.0}
                for f in followees
            ],
        )
    started = time.perf_counter()
    async with db.transaction() as conn:
        await search_index.rebuild(conn)
    reindex_s = time.perf_counter() - started
    if db.is_postgresql:
        # As autovacuum leaves a table in service: statistics, and a visibility map so
        # that index-only scans read no heap pages.
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")
            # And the load's dirty pages written out now, not by the checkpointer during
            # the timed requests (a table in service is not freshly bulk-loaded).
            await conn.exec_driver_sql("CHECKPOINT")
    return rows, reindex_s


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(db: Database, plan: Plan, rng: random.Random) -> dict[str, Any]:
    rows, reindex_s = await _load(db, plan, rng)
    viewer = rows[0]["user_id"]
    queries = _queries(plan, rows, rng)
    search = Search(db, SearchConfig())
    limit = SearchConfig().typeahead_results_max
    like = (
        sa.select(users.c.user_id)
        .where(users.c.username.like(sa.bindparam("p")))
        .order_by(users.c.follower_count.desc())
        .limit(limit)
    )
    for q, _ in queries[:20]:  # warm caches and plans
        await search.find(viewer, q, "accounts", limit=limit)
    typeahead_ms, like_ms, typo_found, typos = [], [], 0, 0
    cpu_s = 0.0
    # The population's 100,000 rows stay alive in this process for the queries' answers:
    # frozen, as an API process freezes start-up's objects, so that no full collection
    # walks them during the requests (counted below).
    freeze_setup()
    full = FullCollections()
    with full:
        for q, meant in queries:
            started, cpu_started = time.perf_counter(), time.process_time()
            hits = await search.find_kinds(viewer, q, KINDS, limit=limit)
            typeahead_ms.append((time.perf_counter() - started) * 1000)
            cpu_s += time.process_time() - cpu_started
            if meant:
                typos += 1
                typo_found += meant in {h.entity_id for h in hits["accounts"]}
            started = time.perf_counter()
            async with db.snapshot() as conn:
                (await conn.execute(like, {"p": q.replace("_", "\\_") + "%"})).all()
            like_ms.append((time.perf_counter() - started) * 1000)
    gc.unfreeze()
    return {
        "typeahead_p99_ms": round(_p(typeahead_ms, 0.99), 2),
        "typeahead_p50_ms": round(statistics.median(typeahead_ms), 2),
        "like_prefix_p99_ms": round(_p(like_ms, 0.99), 2),
        "typeahead_over_like_p99": round(_p(typeahead_ms, 0.99) / max(_p(like_ms, 0.99), 1e-3), 1),
        "typeahead_cpu_ms_mean": round(cpu_s / len(queries) * 1000, 2),
        "typo_recall_at_10": round(typo_found / max(typos, 1), 3),
        "typo_queries": typos,
        "reindex_s": round(reindex_s, 2),
        "gc_full_during_requests": full.statistics(),
    }


@contextlib.asynccontextmanager
async def _database(engine: str, scratch: Path) -> AsyncIterator[Database]:
    if engine == "sqlite":
        db = await open_database(scratch / "search.sqlite3")
        try:
            yield db
        finally:
            await db.close()
        return
    schema = f"bench_search_{uuid.uuid4().hex[:12]}"
    db = await open_database(PG_URL, schema=schema)
    try:
        yield db
    finally:
        await db.close()
        admin = await open_database(PG_URL)
        try:
            async with admin.transaction() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()


async def run(plan: Plan, scratch: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for engine in ("sqlite", "postgresql"):
        async with _database(engine, scratch) as db:
            out[engine] = await _measure(db, plan, random.Random(SEED))
    return out


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-search-", dir=base) as scratch:
        detail = asyncio.run(run(plan, Path(scratch)))
    figures = {
        f"{name}_{engine}": value
        for engine, measured in detail.items()
        for name, value in measured.items()
        if name not in ("typo_queries", "gc_full_during_requests")
    }
    doc = {
        **run_header("search", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "sizes": (
            f"{plan.users} users, {plan.hashtags} hashtags, {plan.places} places, "
            f"{plan.queries} typeahead queries"
            + (" (quick mode: smaller than the goal's)" if quick else "")
        ),
        "figures": figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "plan": asdict(plan),
        "detail": detail,
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
