"""Stories, the writes and the rules of who sees one (docs/api/stories.md).

Rules:
- A story is one media of the author's own, from the media pipeline: a photo, or a video of
  at most [social] story_video_s_max seconds. Posting attaches the media (the unattached
  upload expiry no longer takes it).
- It lives exactly STORY_LIFETIME_S: every read here filters `expires_unix_s > now`, so an
  expired story is invisible whether or not the sweep has run.
- At most stories_per_day_max stories per author in any STORY_LIFETIME_S (429 beyond, with
  the seconds until the oldest of them leaves the window).
- Who sees a story: its author; nobody on the other side of a block; a private author's
  followers only; a close-friends story only the author's close friends.
- Every function takes `now` (Unix seconds) so tests and the sweep decide the time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from social import accounts, graph, posts
from social.config import SocialConfig
from social.errors import Forbidden, Invalid, NotVisible, RateLimited
from social.schema import follows
from social.stories_schema import (
    AUDIENCES,
    STORY_LIFETIME_S,
    close_friends,
    highlight_stories,
    stories,
)
from transformer import media_store
from transformer.schema import media as media_table

LOCK: Final = "stories"
FOLLOWERS: Final = "followers"
CLOSE_FRIENDS: Final = "close_friends"
_MEDIA_USABLE: Final = (media_store.MediaStatus.PROCESSING, media_store.MediaStatus.READY)


@dataclass(frozen=True, slots=True)
class Story:
    story_id: int
    author_id: int
    media_id: int
    media_type: str
    can_reply: bool
    audience: str
    created_unix_s: float
    expires_unix_s: float
    archived_unix_s: float | None
    reclaimed_unix_s: float | None

    def live(self, now: float) -> bool:
        return self.created_unix_s <= now < self.expires_unix_s


_FIELDS: Final = tuple(Story.__dataclass_fields__)


def story_of(row: Any) -> Story:
    fields = {n: row._mapping[n] for n in _FIELDS}
    fields["can_reply"] = bool(fields["can_reply"])  # an integer from plain sqlite3
    return Story(**fields)


@dataclass(frozen=True, slots=True)
class NewStory:
    """A story to post, checked (`new_story_of`)."""

    media_id: int
    can_reply: bool
    audience: str


def new_story_of(body: dict[str, Any]) -> NewStory:
    can_reply = body.get("can_reply", True)
    if not isinstance(can_reply, bool):
        raise Invalid("can_reply must be true or false")
    audience = body.get("audience", FOLLOWERS)
    if audience not in AUDIENCES:
        raise Invalid(f"audience must be one of {', '.join(AUDIENCES)}")
    return NewStory(posts.parse_id(body.get("media_id"), "media_id"), can_reply, audience)


async def _check_media(
    conn: AsyncConnection, author: int, media_id: int, config: SocialConfig
) -> str:
    m = media_table.c
    row = (
        await conn.execute(
            sa.select(m.owner_id, m.status, m.media_type, m.duration_s).where(
                m.media_id == media_id
            )
        )
    ).first()
    if row is None or row.owner_id != author or row.status not in _MEDIA_USABLE:
        raise NotVisible("no such media (post a media of your own, uploaded and not expired)")
    used = (
        await conn.execute(sa.select(stories.c.story_id).where(stories.c.media_id == media_id))
    ).first()
    if used is not None:
        raise Invalid("this media is already a story; upload it again", code="media_in_use")
    if row.media_type == "video" and (
        row.duration_s is not None and row.duration_s > config.story_video_s_max
    ):
        raise Invalid(
            f"a video story lasts at most {config.story_video_s_max} s", code="video_too_long"
        )
    return str(row.media_type)


async def post(
    db: Database,
    ids: IdGenerator,
    config: SocialConfig,
    author: int,
    new: NewStory,
    *,
    now: float | None = None,
) -> Story:
    """Commits one story (expiring exactly STORY_LIFETIME_S after `now`) and attaches its
    media; RateLimited beyond stories_per_day_max in the last STORY_LIFETIME_S."""
    now = time.time() if now is None else now
    s = stories.c
    async with db.transaction(lock=LOCK) as conn:
        recent = (
            await conn.execute(
                sa.select(s.created_unix_s)
                .where(s.author_id == author, s.created_unix_s > now - STORY_LIFETIME_S)
                .order_by(s.created_unix_s)
            )
        ).all()
        if len(recent) >= config.stories_per_day_max:
            reset_s = float(recent[-config.stories_per_day_max].created_unix_s)
            raise RateLimited(
                f"at most {config.stories_per_day_max} stories in 24 hours",
                limit=config.stories_per_day_max,
                reset_s=max(0.0, reset_s + STORY_LIFETIME_S - now),
            )
        media_type = await _check_media(conn, author, new.media_id, config)
        await media_store.attach(conn, [new.media_id], now=now)
        story = Story(
            story_id=ids.next_id(),
            author_id=author,
            media_id=new.media_id,
            media_type=media_type,
            can_reply=new.can_reply,
            audience=new.audience,
            created_unix_s=now,
            expires_unix_s=now + STORY_LIFETIME_S,
            archived_unix_s=None,
            reclaimed_unix_s=None,
        )
        await conn.execute(stories.insert().values(**{n: getattr(story, n) for n in _FIELDS}))
    return story


async def get_many(conn: AsyncConnection, story_ids: Iterable[int]) -> dict[int, Story]:
    wanted = sorted(set(story_ids))
    if not wanted:
        return {}
    rows = await conn.execute(sa.select(stories).where(stories.c.story_id.in_(wanted)))
    return {int(r.story_id): story_of(r) for r in rows}


async def close_friend_of(conn: AsyncConnection, viewer: int, owners: Iterable[int]) -> set[int]:
    """The owners among these who have the viewer on their close-friends list."""
    wanted = sorted(set(owners))
    if not wanted:
        return set()
    c = close_friends.c
    rows = await conn.execute(
        sa.select(c.owner_id).where(c.friend_id == viewer, c.owner_id.in_(wanted))
    )
    return {int(r.owner_id) for r in rows}


async def visible_among(conn: AsyncConnection, viewer: int, found: list[Story]) -> list[Story]:
    """The stories of `found` the viewer may see (module rules; no time filter here)."""
    authors = {s.author_id for s in found}
    owners = await accounts.get_many(conn, authors)
    allowed = await graph.visible_authors(conn, viewer, owners)
    friends = await close_friend_of(
        conn, viewer, {s.author_id for s in found if s.audience == CLOSE_FRIENDS}
    )
    return [
        s
        for s in found
        if s.author_id in allowed
        and (s.author_id == viewer or s.audience != CLOSE_FRIENDS or s.author_id in friends)
    ]


async def visible(
    conn: AsyncConnection, viewer: int, story_id: int, *, now: float, live: bool = True
) -> Story:
    """The story if the viewer may see it now (live unless `live` is False: a highlight's
    story, or the author's archive); NotVisible otherwise, the same for absent."""
    story = (await get_many(conn, [story_id])).get(story_id)
    if story is None or (live and not story.live(now)):
        raise NotVisible("no such story")
    if not await visible_among(conn, viewer, [story]):
        raise NotVisible("no such story")
    return story


async def reel(conn: AsyncConnection, viewer: int, author: int, *, now: float) -> list[Story]:
    """The author's live stories the viewer may see, oldest first."""
    s = stories.c
    rows = await conn.execute(
        sa.select(stories)
        .where(s.author_id == author, s.expires_unix_s > now, s.created_unix_s <= now)
        .order_by(s.story_id)
    )
    return await visible_among(conn, viewer, [story_of(r) for r in rows])


async def live_of_followed(
    conn: AsyncConnection, viewer: int, *, now: float, authors_max: int
) -> list[Story]:
    """The live stories of the accounts the viewer follows and the viewer's own, that the
    viewer may see, by author then oldest first; at most `authors_max` authors (those with
    the newest stories when there are more)."""
    s, f = stories.c, follows.c
    followed = sa.select(f.followee_id).where(f.follower_id == viewer)
    rows = (
        await conn.execute(
            sa.select(stories)
            .where(
                sa.or_(s.author_id == viewer, s.author_id.in_(followed)),
                s.expires_unix_s > now,
                s.created_unix_s <= now,
            )
            .order_by(s.story_id)
        )
    ).all()
    found = await visible_among(conn, viewer, [story_of(r) for r in rows])
    newest: dict[int, int] = {}
    for story in found:
        newest[story.author_id] = story.story_id
    keep = set(sorted(newest, key=newest.__getitem__, reverse=True)[:authors_max])
    return [story for story in found if story.author_id in keep]


async def archive(
    conn: AsyncConnection, owner: int, *, now: float, before: int | None, limit: int
) -> list[Story]:
    """The owner's expired stories still holding their media, newest first (the archive
    highlights are made from)."""
    s = stories.c
    query = (
        sa.select(stories)
        .where(s.author_id == owner, s.expires_unix_s <= now, s.reclaimed_unix_s.is_(None))
        .order_by(s.story_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(s.story_id < before)
    return [story_of(r) for r in await conn.execute(query)]


async def in_highlights(conn: AsyncConnection, story_ids: Iterable[int]) -> set[int]:
    wanted = sorted(set(story_ids))
    if not wanted:
        return set()
    h = highlight_stories.c
    rows = await conn.execute(sa.select(h.story_id).where(h.story_id.in_(wanted)).distinct())
    return {int(r.story_id) for r in rows}


def check_reply(story: Story, viewer: int) -> None:
    """Forbidden when the viewer may not reply to a story they see."""
    if story.author_id == viewer:
        raise Invalid("you cannot reply to your own story", code="own_story")
    if not story.can_reply:
        raise Forbidden("replies to this story are turned off", code="replies_off")
