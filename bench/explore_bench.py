"""`pinhole bench explore`: Explore's offline quality against two baselines, the cost of a
page read and of the refresh job.

A synthetic population (seeded): users in planted interest communities, each community
with its own hashtags and places; posts by its members with power-law (Zipf) appeal; each
user likes mostly posts of their community (by appeal) and some of the whole site (by
appeal), in time order, and follows a few accounts. Each user's last likes are held out;
the rest is the corpus the pure ranking functions (social/explore_model.py) see. For
evaluated users, held-out likes of posts Explore may not show (own, followed) are dropped.

Figures:
- explore_recall_at_24, explore_ndcg_at_24: Explore's first page of 24 against the held-out
  likes (binary relevance), the mean over evaluated users;
- popularity_recall_at_24, popularity_ndcg_at_24: the most liked posts the user may see,
  same filters (the baseline of the same run); random_recall_at_24, random_ndcg_at_24:
  random posts of accounts the user does not follow;
- explore_recall_vs_popularity: their ratio (goal >= 2);
- explore_page_p99_ms, explore_page_p50_ms (goal < 20 ms): `GET /api/v1/explore`'s
  service part on SQLite (the stored list read, sliced, visibility re-checked against
  follows, blocks and privacy), minus HTTP and hydration;
- explore_page_cpu_ms_mean: this process's CPU time per page read (what a loaded machine
  inflates least; on SQLite the database's work is in it too);
- refresh_ms_per_user: a refresh pass over the database (candidate pool load, ranking in a
  thread, lists written) divided by the active users it refreshed.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.report import Goals, publish, run_header
from common.db import Database, migrate, open_database
from social import explore, explore_model, explore_schema, search_schema
from social import schema as social_schema
from social.explore_config import ExploreConfig
from transformer import schema as media_schema

GOALS: Final[Goals] = {
    "explore_recall_vs_popularity": (">=", 2.0),
    "explore_page_p99_ms": ("<", 20.0),
}
SEED: Final = 20261207
PAGE: Final = 24
DAY_S: Final = 86400.0
INSERT_BATCH_ROWS: Final = 5000


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    communities: int
    posts: int
    likes_per_user_mean: int
    held_out_per_user: int
    in_community_pct: int
    follows_per_user: int
    evaluated_users: int
    active_users: int
    page_reads: int
    zipf_exponent: float = 1.1


QUICK: Final = Plan(1500, 12, 4000, 24, 4, 80, 10, 400, 100, 300)
FULL: Final = Plan(10000, 40, 30000, 40, 5, 80, 20, 2000, 500, 2000)


@dataclass(frozen=True)
class Population:
    corpus: explore_model.Corpus
    held_out: dict[int, set[int]]
    follows: dict[int, set[int]]
    now: float


def population(plan: Plan, rng: np.random.Generator) -> Population:
    """The corpus without the held-out likes, those likes and the follow lists."""
    now = 1_800_000_000.0
    community = rng.integers(0, plan.communities, plan.users)
    author = rng.integers(0, plan.users, plan.posts)
    post_comm = community[author]
    created = np.sort(rng.uniform(now - 28 * DAY_S, now - 600, plan.posts))
    appeal = rng.zipf(plan.zipf_exponent + 1, plan.posts).astype(np.float64)
    appeal = np.minimum(appeal, 1000.0)
    tags_per = 4
    tag_post = np.repeat(np.arange(plan.posts), 1)
    tag_id = post_comm * tags_per + rng.integers(0, tags_per, plan.posts)
    place = np.where(
        rng.random(plan.posts) < 0.5, post_comm * 3 + rng.integers(0, 3, plan.posts), -1
    )
    by_comm = {c: np.flatnonzero(post_comm == c) for c in range(plan.communities)}
    glob_p = appeal / appeal.sum()
    users_l: list[int] = []
    posts_l: list[int] = []
    times_l: list[float] = []
    held_out: dict[int, set[int]] = {}
    for u in range(plan.users):
        n = max(plan.held_out_per_user + 2, int(rng.poisson(plan.likes_per_user_mean)))
        mine = by_comm[int(community[u])]
        local_p = appeal[mine] / appeal[mine].sum()
        k_local = n * plan.in_community_pct // 100
        chosen = set(rng.choice(mine, size=min(k_local, len(mine)), replace=False, p=local_p))
        chosen |= set(rng.choice(plan.posts, size=n - k_local, replace=False, p=glob_p))
        picked = np.asarray(sorted(chosen), dtype=np.int64)
        # A like comes after its post; the last ones (by time) are held out.
        when = created[picked] + rng.uniform(0, 1, len(picked)) * (now - created[picked])
        order = np.argsort(when)
        picked, when = picked[order], when[order]
        cut = len(picked) - plan.held_out_per_user
        held_out[u] = {int(p) for p in picked[cut:]}
        users_l += [u] * cut
        posts_l += [int(p) for p in picked[:cut]]
        times_l += [float(t) for t in when[:cut]]
    order = np.argsort(np.asarray(times_l), kind="stable")
    follows = {
        u: {int(a) for a in rng.integers(0, plan.users, plan.follows_per_user)} - {u}
        for u in range(plan.users)
    }
    corpus = explore_model.Corpus(
        n_users=plan.users,
        like_user=np.asarray(users_l, dtype=np.int64)[order],
        like_post=np.asarray(posts_l, dtype=np.int64)[order],
        like_unix_s=np.asarray(times_l, dtype=np.float64)[order],
        post_author=author.astype(np.int64),
        post_created_unix_s=created,
        tag_post=tag_post.astype(np.int64),
        tag_id=tag_id.astype(np.int64),
        post_place=place.astype(np.int64),
    )
    return Population(corpus, held_out, follows, now)


def _ndcg(ranked: list[int], relevant: set[int]) -> float:
    gains = sum(1.0 / np.log2(i + 2) for i, p in enumerate(ranked[:PAGE]) if p in relevant)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(len(relevant), PAGE)))
    return float(gains / ideal) if ideal else 0.0


def offline(plan: Plan, config: ExploreConfig) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    pop = population(plan, rng)
    t0 = time.perf_counter()
    idx = explore_model.index(pop.corpus, config, now=pop.now)
    index_s = time.perf_counter() - t0
    authors = pop.corpus.post_author
    scores: dict[str, list[float]] = {
        f"{m}_{k}": [] for m in ("explore", "popularity", "random") for k in ("recall", "ndcg")
    }
    evaluated = 0
    rank_s = 0.0
    users = rng.permutation(plan.users)
    for u in users:
        u = int(u)
        excluded = np.asarray(sorted(pop.follows[u] | {u}), dtype=np.int64)
        allowed_post = ~np.isin(authors, excluded)
        relevant = {p for p in pop.held_out[u] if allowed_post[p]}
        if not relevant:
            continue
        mine = explore_model.user_posts(idx, u)
        allowed_post[mine] = False
        started = time.perf_counter()
        ours = [int(p) for p in explore_model.rank(idx, mine, excluded, config)[:PAGE]]
        rank_s += time.perf_counter() - started
        popular = [int(p) for p in explore_model.popular(idx, allowed_post, PAGE)]
        pool = np.flatnonzero(allowed_post)
        randoms = [int(p) for p in rng.choice(pool, size=min(PAGE, len(pool)), replace=False)]
        for name, ranked in (("explore", ours), ("popularity", popular), ("random", randoms)):
            hits = len(set(ranked[:PAGE]) & relevant)
            scores[f"{name}_recall"].append(hits / len(relevant))
            scores[f"{name}_ndcg"].append(_ndcg(ranked, relevant))
        evaluated += 1
        if evaluated >= plan.evaluated_users:
            break
    figures: dict[str, Any] = {}
    for name in ("explore", "popularity", "random"):
        figures[f"{name}_recall_at_24"] = round(statistics.fmean(scores[f"{name}_recall"]), 4)
        figures[f"{name}_ndcg_at_24"] = round(statistics.fmean(scores[f"{name}_ndcg"]), 4)
    popular_recall = figures["popularity_recall_at_24"]
    figures["explore_recall_vs_popularity"] = (
        round(figures["explore_recall_at_24"] / popular_recall, 2) if popular_recall else 0.0
    )
    figures["rank_ms_per_user_offline"] = round(rank_s / max(evaluated, 1) * 1000, 3)
    return {"figures": figures, "evaluated_users": evaluated, "index_s": round(index_s, 3)}


async def _insert(db: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), INSERT_BATCH_ROWS):
        async with db.transaction() as conn:
            await conn.execute(table.insert(), rows[start : start + INSERT_BATCH_ROWS])


async def online(plan: Plan, config: ExploreConfig, scratch: Path) -> dict[str, Any]:
    """The population in SQLite (posts recent, so all are candidates): a refresh pass for
    the active users, then page reads of their lists."""
    rng = np.random.default_rng(SEED + 1)
    pop = population(plan, rng)
    now = time.time()
    shift = now - pop.now
    db = await open_database(scratch / "explore.sqlite3")
    try:
        for component, migrations in (
            (media_schema.COMPONENT, media_schema.MIGRATIONS),
            (social_schema.COMPONENT, social_schema.MIGRATIONS),
            (search_schema.COMPONENT, search_schema.MIGRATIONS),
            (explore_schema.COMPONENT, explore_schema.MIGRATIONS),
        ):
            await migrate(db, component, migrations)
        c = pop.corpus
        active = set(range(plan.active_users))
        user_ids = [u + 1 for u in range(plan.users)]
        await _insert(
            db,
            social_schema.users,
            [
                {
                    "user_id": uid,
                    "username": f"u{uid}",
                    "email": None,
                    "password_hash": "x",
                    "full_name": "",
                    "bio": "",
                    "avatar_media_id": None,
                    "is_private": uid % 50 == 0,
                    "is_verified": False,
                    "is_celebrity": False,
                    "follower_count": 0,
                    "following_count": 0,
                    "post_count": 0,
                    "created_unix_s": now,
                    "updated_unix_s": now,
                    "active_unix_s": now if uid - 1 in active else now - 60 * DAY_S,
                }
                for uid in user_ids
            ],
        )
        likes_per_post = np.bincount(c.like_post, minlength=c.n_posts)
        await _insert(
            db,
            social_schema.posts,
            [
                {
                    "post_id": p + 1,
                    "author_id": int(c.post_author[p]) + 1,
                    "caption": "",
                    "location": None,
                    "status": "live",
                    "like_count": int(likes_per_post[p]),
                    "comment_count": 0,
                    "created_unix_s": float(c.post_created_unix_s[p]) + shift,
                    "deleted_unix_s": None,
                }
                for p in range(c.n_posts)
            ],
        )
        await _insert(
            db,
            social_schema.likes,
            [
                {"user_id": int(u) + 1, "post_id": int(p) + 1, "created_unix_s": float(t) + shift}
                for u, p, t in zip(c.like_user, c.like_post, c.like_unix_s, strict=True)
            ],
        )
        await _insert(
            db,
            social_schema.hashtags,
            [
                {"tag": f"t{int(t)}", "post_id": int(p) + 1}
                for p, t in zip(c.tag_post, c.tag_id, strict=True)
            ],
        )
        await _insert(
            db,
            social_schema.follows,
            [
                {"follower_id": u + 1, "followee_id": f + 1, "created_unix_s": now}
                for u, fs in pop.follows.items()
                for f in fs
            ],
        )
        started = time.perf_counter()
        done = await explore.refresh_once(db, config, now=now)
        refresh_s = time.perf_counter() - started
        readers = [u + 1 for u in sorted(active)]
        times: list[float] = []
        cpu_started = time.process_time()
        for i in range(plan.page_reads):
            viewer = readers[i % len(readers)]
            t0 = time.perf_counter()
            await explore.page(db, config, viewer, cursor=None, limit=PAGE, now=now)
            times.append((time.perf_counter() - t0) * 1000)
        cpu_ms = (time.process_time() - cpu_started) / plan.page_reads * 1000
        times.sort()
        return {
            "figures": {
                "explore_page_p99_ms": round(times[int(0.99 * (len(times) - 1))], 2),
                "explore_page_p50_ms": round(times[len(times) // 2], 2),
                "explore_page_cpu_ms_mean": round(cpu_ms, 2),
                "refresh_ms_per_user": round(refresh_s / max(done.users, 1) * 1000, 2),
            },
            "refresh": asdict(done),
        }
    finally:
        await db.close()


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    config = ExploreConfig()
    random.seed(SEED)
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    quality = offline(plan, config)
    with tempfile.TemporaryDirectory(prefix="bench-explore-", dir=base) as scratch:
        served = asyncio.run(online(plan, config, Path(scratch)))
    doc = {
        **run_header("explore", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "sizes": (
            f"{plan.users} users in {plan.communities} communities, {plan.posts} posts, "
            f"{plan.evaluated_users} users evaluated, {plan.active_users} refreshed"
            + (" (quick mode: smaller than the full run)" if quick else "")
        ),
        "figures": {**quality["figures"], **served["figures"]},
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "plan": asdict(plan),
        "detail": {
            "evaluated_users": quality["evaluated_users"],
            "index_s": quality["index_s"],
            "refresh": served["refresh"],
        },
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
