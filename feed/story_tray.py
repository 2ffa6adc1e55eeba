"""The stories tray of a viewer (GET /api/v1/stories/tray; docs/api/stories.md).

What it holds: the viewer's own live stories first, then the accounts the viewer follows
with live stories the viewer may see (social/stories.py's rules), authors with an unseen
story before those all seen, then by affinity (social/story_affinity.py), then by newest
story; each author's stories oldest first, each with its seen state. At most [social]
story_tray_authors_max authors.

Cached per viewer in the story store (feed/story_store.py) as built from SQL, with the
earliest expiry among its stories: a cached tray is used only before that moment and for
at most story_tray_cache_s_max seconds, and it is dropped when an author the viewer follows
posts (`forget_followers`) and when a follow, an unfollow or a block of the viewer's
commits (the feed's `on_follower_changed`, registered by api/story_routes.py). The seen
state is never cached (one SMISMEMBER per read), and blocks are re-checked on every read
(one indexed SQL read), so a block made in any channel hides the other side at once. A
warm read is two hot-store round trips and that SQL read (one statement,
social/story_reads.py), then one snapshot reading the shown authors' accounts and their
profile pictures (three statements for the whole tray, never one per author): names and
pictures are read fresh on every read, never cached with the tray.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from common.db import Database
from feed.story_store import StoryStore
from social import accounts, stories, story_reads
from social.config import SocialConfig
from social.schema import follows
from social.story_affinity import affinity
from transformer import media_store

FORGET_BATCH_MAX: Final = 1000  # followers read and trays dropped per round


@dataclass(frozen=True, slots=True)
class TrayStory:
    story_id: int
    media_type: str
    audience: str
    created_unix_s: float
    expires_unix_s: float
    seen: bool


@dataclass(frozen=True, slots=True)
class TrayAuthor:
    user_id: int
    username: str
    affinity: int
    stories: tuple[TrayStory, ...]

    @property
    def has_unseen(self) -> bool:
        return any(not s.seen for s in self.stories)


@dataclass(frozen=True, slots=True)
class Tray:
    authors: tuple[TrayAuthor, ...]
    cached: bool  # served from the cache (else built from SQL now)
    # The shown authors' accounts (one gone meanwhile is absent) and their profile
    # pictures by media id, read in one snapshot on every read.
    accounts: dict[int, accounts.User]
    pictures: dict[int, tuple[media_store.MediaRow, list[media_store.VariantRow]]]


async def _build(db: Database, config: SocialConfig, viewer: int, *, now: float) -> dict[str, Any]:
    async with db.snapshot() as conn:
        found = await stories.live_of_followed(
            conn, viewer, now=now, authors_max=config.story_tray_authors_max
        )
        authors = sorted({s.author_id for s in found})
        users = await accounts.get_many(conn, authors)
        scores = await affinity(conn, config, viewer, authors)
    by_author: dict[int, list[list[Any]]] = {a: [] for a in authors}
    for s in found:
        by_author[s.author_id].append(
            [s.story_id, s.media_type, s.audience, s.created_unix_s, s.expires_unix_s]
        )
    return {
        "valid_until": min((s.expires_unix_s for s in found), default=None),
        "authors": [
            [a, users[a].username if a in users else "", scores.get(a, 0), by_author[a]]
            for a in authors
        ],
    }


async def read(
    db: Database, store: StoryStore, config: SocialConfig, viewer: int, *, now: float | None = None
) -> Tray:
    now = time.time() if now is None else now
    raw, generation = await store.get_tray(viewer)
    doc = None if raw is None else json.loads(raw)
    cached = doc is not None and (doc["valid_until"] is None or doc["valid_until"] > now)
    if not cached:
        # Built from a snapshot taken after `generation` was read: stored only if no drop
        # (a follow, a post ...) came meanwhile, else the next read builds again.
        doc = await _build(db, config, viewer, now=now)
        ttl_s = float(config.story_tray_cache_s_max)
        if doc["valid_until"] is not None:
            ttl_s = min(ttl_s, doc["valid_until"] - now)
        if ttl_s > 0:
            await store.put_tray(
                viewer, json.dumps(doc).encode(), ttl_s=ttl_s, generation=generation
            )
    assert doc is not None
    entries = doc["authors"]
    if cached and entries:
        others = [e[0] for e in entries if e[0] != viewer]
        blocked = await story_reads.blocked_among(db, viewer, others)
        entries = [e for e in entries if e[0] not in blocked]
    story_ids = [s[0] for e in entries for s in e[3]]
    seen = await store.seen(viewer, story_ids)
    out = [
        TrayAuthor(
            user_id=e[0],
            username=e[1],
            affinity=e[2],
            stories=tuple(
                TrayStory(s[0], s[1], s[2], s[3], s[4], seen=s[0] in seen or e[0] == viewer)
                for s in e[3]
                if s[4] > now
            ),
        )
        for e in entries
    ]
    out = [a for a in out if a.stories]
    out.sort(
        key=lambda a: (
            a.user_id != viewer,
            not a.has_unseen,
            -a.affinity,
            -a.stories[-1].story_id,
        )
    )
    users, pictures = await _accounts(db, [a.user_id for a in out])
    return Tray(tuple(out), cached=cached, accounts=users, pictures=pictures)


async def _accounts(
    db: Database, user_ids: list[int]
) -> tuple[
    dict[int, accounts.User], dict[int, tuple[media_store.MediaRow, list[media_store.VariantRow]]]
]:
    """The accounts and their profile pictures (with variants) in one snapshot."""
    if not user_ids:
        return {}, {}
    async with db.snapshot() as conn:
        users = await accounts.get_many(conn, user_ids)
        wanted = [u.avatar_media_id for u in users.values() if u.avatar_media_id is not None]
        pictures = await media_store.get_many(conn, wanted)
    return users, pictures


async def forget_followers(
    db: Database,
    store: StoryStore,
    author: int,
    *,
    each_batch: Callable[[list[int]], None] | None = None,
) -> int:
    """Drops the cached trays of the author and every follower (the author posted), reading
    the followers FORGET_BATCH_MAX at a time and handing each batch to `each_batch` (the
    story wake-ups); returns how many trays were dropped (at most)."""
    await store.drop_trays([author])
    f = follows.c
    after = None
    dropped = 1
    while True:
        query = (
            sa.select(f.follower_id)
            .where(f.followee_id == author)
            .order_by(f.follower_id)
            .limit(FORGET_BATCH_MAX)
        )
        if after is not None:
            query = query.where(f.follower_id > after)
        async with db.snapshot() as conn:
            followers = [int(r.follower_id) for r in await conn.execute(query)]
        if not followers:
            return dropped
        await store.drop_trays(followers)
        if each_batch is not None:
            each_batch(followers)
        dropped += len(followers)
        after = followers[-1]
