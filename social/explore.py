"""The Explore service (docs/api/explore.md): posts from accounts the viewer does not
follow, personalised.

A refresh pass (`refresh_once`, run by a `LeasedLoop` every [explore] refresh_interval_s)
reads the candidate pool once (live posts at most candidate_age_max_s old, their likes,
hashtags and places) into a `Corpus`, then for each account active within active_s ranks
it with the pure functions of social/explore_model.py (co-engagement, hashtag and place
interest, trending, popularity; diversified) in a worker thread, and stores the list
(social/explore_schema.py). A page read (`page`) slices the stored list; with no list, or
one older than stale_s, it computes the viewer's list first (once; the next read finds it).

Privacy, at compute time and again at read time: never the viewer's own posts, posts of
accounts they follow, of accounts blocked either way, or of private accounts (their posts
go only to followers, who are excluded as followed); deleted or hidden posts drop out at
read time. Seen: the viewer's liked posts are never listed.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from social import explore_model
from social.errors import Invalid
from social.explore_config import ExploreConfig
from social.explore_schema import explore_lists
from social.schema import blocks, follows, hashtags, likes, posts, users
from social.search_schema import post_places

LIVE: Final = "live"  # social.posts.PostStatus.LIVE
LEASE: Final = "explore_refresh"
LOCK: Final = "explore"
EXCLUDED_BATCH_MAX: Final = 500  # viewers per IN list of the refresh pass's graph reads
CURSOR: Final = re.compile(r"[0-9]{1,9}")  # a position in the stored list


@dataclass(frozen=True, slots=True)
class Loaded:
    """A corpus and the ids behind its dense indices."""

    index: explore_model.Index
    post_ids: np.ndarray[Any, np.dtype[np.int64]]
    user_index: dict[int, int]
    user_ids: list[int]
    private_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class Refreshed:
    users: int
    posts: int
    likes: int
    load_s: float
    rank_s: float
    write_s: float


@dataclass(frozen=True, slots=True)
class ExplorePage:
    post_ids: list[int]
    next_cursor: str | None


async def load(conn: AsyncConnection, config: ExploreConfig, *, now: float) -> Loaded:
    """The candidate pool and its likes, hashtags and places, in the caller's snapshot."""
    p = posts.c
    newest = (
        await conn.execute(
            sa.select(p.post_id, p.author_id, p.created_unix_s)
            .where(p.status == LIVE, p.created_unix_s >= now - config.candidate_age_max_s)
            .order_by(p.post_id.desc())
            .limit(config.candidate_posts_max)
        )
    ).all()
    rows = list(reversed(newest))  # oldest first
    post_ids = np.asarray([r.post_id for r in rows], dtype=np.int64)
    post_pos = {int(pid): i for i, pid in enumerate(post_ids)}
    user_index: dict[int, int] = {}
    user_ids: list[int] = []

    def user(uid: int) -> int:
        at = user_index.get(uid)
        if at is None:
            at = user_index[uid] = len(user_ids)
            user_ids.append(uid)
        return at

    authors = np.asarray([user(int(r.author_id)) for r in rows], dtype=np.int64)
    created = np.asarray([r.created_unix_s for r in rows], dtype=np.float64)
    first = int(post_ids[0]) if len(post_ids) else 0
    like_rows = (
        await conn.execute(
            sa.select(likes.c.user_id, likes.c.post_id, likes.c.created_unix_s)
            .where(likes.c.post_id >= first)
            .order_by(likes.c.created_unix_s, likes.c.post_id)
        )
    ).all()
    like_rows = [r for r in like_rows if r.post_id in post_pos]
    tag_rows = (
        await conn.execute(
            sa.select(hashtags.c.tag, hashtags.c.post_id).where(hashtags.c.post_id >= first)
        )
    ).all()
    tag_rows = [r for r in tag_rows if r.post_id in post_pos]
    tag_ids: dict[str, int] = {}
    place_rows = (
        await conn.execute(
            sa.select(post_places.c.post_id, post_places.c.place_id).where(
                post_places.c.post_id >= first
            )
        )
    ).all()
    place_ids: dict[int, int] = {}
    post_place = np.full(len(post_ids), -1, dtype=np.int64)
    for r in place_rows:
        if r.post_id in post_pos:
            post_place[post_pos[r.post_id]] = place_ids.setdefault(int(r.place_id), len(place_ids))
    like_user = np.asarray([user(int(r.user_id)) for r in like_rows], dtype=np.int64)
    corpus = explore_model.Corpus(
        n_users=len(user_ids),
        like_user=like_user,
        like_post=np.asarray([post_pos[r.post_id] for r in like_rows], dtype=np.int64),
        like_unix_s=np.asarray([r.created_unix_s for r in like_rows], dtype=np.float64),
        post_author=authors,
        post_created_unix_s=created,
        tag_post=np.asarray([post_pos[r.post_id] for r in tag_rows], dtype=np.int64),
        tag_id=np.asarray(
            [tag_ids.setdefault(r.tag, len(tag_ids)) for r in tag_rows], dtype=np.int64
        ),
        post_place=post_place,
    )
    private = (
        await conn.execute(sa.select(users.c.user_id).where(users.c.is_private == sa.true()))
    ).all()
    idx = await asyncio.to_thread(explore_model.index, corpus, config, now=now)
    return Loaded(idx, post_ids, user_index, user_ids, frozenset(int(r[0]) for r in private))


async def excluded_authors(conn: AsyncConnection, viewer: int) -> set[int]:
    """The viewer, the accounts they follow and those blocked either way."""
    return (await excluded_for(conn, [viewer]))[viewer]


async def excluded_for(conn: AsyncConnection, viewers: list[int]) -> dict[int, set[int]]:
    """excluded_authors of several viewers, in two queries per EXCLUDED_BATCH_MAX viewers."""
    out: dict[int, set[int]] = {v: {v} for v in viewers}
    f, b = follows.c, blocks.c
    for start in range(0, len(viewers), EXCLUDED_BATCH_MAX):
        batch = viewers[start : start + EXCLUDED_BATCH_MAX]
        rows = await conn.execute(
            sa.select(f.follower_id, f.followee_id).where(f.follower_id.in_(batch))
        )
        for follower, followee in rows:
            out[int(follower)].add(int(followee))
        rows = await conn.execute(
            sa.select(b.blocker_id, b.blocked_id).where(
                sa.or_(b.blocker_id.in_(batch), b.blocked_id.in_(batch))
            )
        )
        for blocker, blocked in rows:
            if blocker in out:
                out[int(blocker)].add(int(blocked))
            if blocked in out:
                out[int(blocked)].add(int(blocker))
    return out


def rank_for(loaded: Loaded, viewer: int, excluded: set[int], config: ExploreConfig) -> list[int]:
    """The viewer's list (post ids, best first): CPU work, run in a worker thread."""
    idx = loaded.index
    at = loaded.user_index.get(viewer)
    mine = explore_model.user_posts(idx, at) if at is not None else np.zeros(0, np.int64)
    own = np.flatnonzero(idx.corpus.post_author == at) if at is not None else np.zeros(0, np.int64)
    skip = [loaded.user_index[u] for u in excluded | loaded.private_ids if u in loaded.user_index]
    ranked = explore_model.rank(idx, mine, np.asarray(skip, dtype=np.int64), config, own_posts=own)
    return [int(p) for p in loaded.post_ids[ranked]]


async def store(db: Database, lists: dict[int, list[int]], *, now: float) -> None:
    if not lists:
        return
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(explore_lists.delete().where(explore_lists.c.user_id.in_(list(lists))))
        await conn.execute(
            explore_lists.insert(),
            [
                {"user_id": u, "computed_unix_s": now, "post_ids": ",".join(map(str, ids))}
                for u, ids in lists.items()
            ],
        )


async def refresh_once(db: Database, config: ExploreConfig, *, now: float) -> Refreshed:
    """One pass: a list for each account active within active_s (the most recently active
    refresh_users_per_pass_max). Idempotent: a pass cut short leaves older lists."""
    started = time.perf_counter()
    async with db.snapshot() as conn:
        loaded = await load(conn, config, now=now)
        active = [
            int(r[0])
            for r in await conn.execute(
                sa.select(users.c.user_id)
                .where(users.c.active_unix_s >= now - config.active_s)
                .order_by(users.c.active_unix_s.desc())
                .limit(config.refresh_users_per_pass_max)
            )
        ]
        excluded = await excluded_for(conn, active)
    loaded_at = time.perf_counter()

    def rank_all() -> dict[int, list[int]]:
        return {u: rank_for(loaded, u, excluded[u], config) for u in active}

    lists = await asyncio.to_thread(rank_all)
    ranked_at = time.perf_counter()
    await store(db, lists, now=now)
    c = loaded.index.corpus
    return Refreshed(
        len(active),
        c.n_posts,
        len(c.like_post),
        loaded_at - started,
        ranked_at - loaded_at,
        time.perf_counter() - ranked_at,
    )


async def compute_for(db: Database, config: ExploreConfig, viewer: int, *, now: float) -> list[int]:
    """The viewer's list computed now and stored (a read that found none)."""
    async with db.snapshot() as conn:
        loaded = await load(conn, config, now=now)
        excluded = await excluded_authors(conn, viewer)
    found = await asyncio.to_thread(rank_for, loaded, viewer, excluded, config)
    await store(db, {viewer: found}, now=now)
    return found


def parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not CURSOR.fullmatch(cursor):
        raise Invalid("cursor is not one this API gave")
    return int(cursor)


async def visible_now(conn: AsyncConnection, viewer: int, post_ids: list[int]) -> set[int]:
    """The posts among `post_ids` Explore may show the viewer now: live, of a public
    account the viewer neither is, follows, blocks nor is blocked by."""
    if not post_ids:
        return set()
    p, f, b = posts.c, follows.c, blocks.c
    author = p.author_id
    followed = sa.exists().where(f.follower_id == viewer, f.followee_id == author)
    blocked = sa.exists().where(
        sa.or_(
            sa.and_(b.blocker_id == viewer, b.blocked_id == author),
            sa.and_(b.blocker_id == author, b.blocked_id == viewer),
        )
    )
    rows = await conn.execute(
        sa.select(p.post_id)
        .select_from(posts.join(users, users.c.user_id == author))
        .where(
            p.post_id.in_(post_ids),
            p.status == LIVE,
            author != viewer,
            users.c.is_private == sa.false(),
            ~followed,
            ~blocked,
        )
    )
    return {int(r[0]) for r in rows}


async def stored_list(conn: AsyncConnection, viewer: int) -> tuple[float, list[int]] | None:
    row = (
        await conn.execute(
            sa.select(explore_lists.c.computed_unix_s, explore_lists.c.post_ids).where(
                explore_lists.c.user_id == viewer
            )
        )
    ).first()
    if row is None:
        return None
    ids = [int(x) for x in row.post_ids.split(",")] if row.post_ids else []
    return float(row.computed_unix_s), ids


async def _slice(
    conn: AsyncConnection, viewer: int, listed: list[int], offset: int, limit: int
) -> ExplorePage:
    out: list[int] = []
    at = offset
    while at < len(listed) and len(out) < limit:
        chunk = listed[at : at + limit - len(out)]
        shown = await visible_now(conn, viewer, chunk)
        out.extend(p for p in chunk if p in shown)
        at += len(chunk)
    return ExplorePage(out, str(at) if at < len(listed) else None)


async def page(
    db: Database,
    config: ExploreConfig,
    viewer: int,
    *,
    cursor: str | None,
    limit: int,
    now: float,
) -> ExplorePage:
    """A page of the viewer's list from position `cursor` (opaque to clients), posts no
    longer visible left out; next_cursor None at the end of the list. A stored list is
    read and re-checked in one read unit (Database.read: one thread hop on SQLite)."""
    offset = parse_cursor(cursor)

    async def stored_page(conn: AsyncConnection) -> ExplorePage | None:
        found = await stored_list(conn, viewer)
        if found is None or now - found[0] > config.stale_s:
            return None
        return await _slice(conn, viewer, found[1], offset, limit)

    done = await db.read(stored_page)
    if done is not None:
        return done
    listed = await compute_for(db, config, viewer, now=now)
    return await db.read(lambda conn: _slice(conn, viewer, listed, offset, limit))
