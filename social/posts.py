"""Posts: a carousel of 1 to post_media_max media, a caption with hashtags and mentions,
tagged users, a location, alt texts. The functions taking a connection run inside the
caller's write transaction, so the API records a post and its fan-out job together.

A post is `processing` while one of its media is (it is shown to its author only), `live`
once every media is ready (the feed's publish job turns it), `failed` if one failed or
expired, and `deleted` for good: its media are set to expire at once, so their needles are
deleted (by the API at once, else by the workers' expiry sweep)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common import ids
from common.ids import IdGenerator
from social import accounts, avatars, graph, notify, places, search_index, text
from social.config import SocialConfig
from social.errors import Invalid, NotVisible
from social.schema import hashtags, post_media, post_users, posts, users
from social.search_config import SearchConfig
from social.search_schema import post_places
from transformer import media_store
from transformer.media_store import GONE, MediaStatus
from transformer.schema import media

LOCK: Final = "social"


class PostStatus(StrEnum):
    """A post's life: processing (its media not all ready; only the author sees it) ->
    live | failed, and deleted by its author. Stored as the member's text."""

    PROCESSING = "processing"
    LIVE = "live"
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class PostMedia:
    media_id: int
    alt_text: str | None


@dataclass(frozen=True, slots=True)
class Post:
    post_id: int
    author_id: int
    caption: str
    location: str | None
    status: str
    like_count: int
    comment_count: int
    created_unix_s: float
    media: tuple[PostMedia, ...]
    tagged: tuple[int, ...] = ()
    hashtags: tuple[str, ...] = ()


def parse_id(value: Any, what: str) -> int:
    if not isinstance(value, str):
        raise Invalid(f"{what} must be an id string")
    try:
        return ids.parse(value)
    except ValueError:
        raise Invalid(f"{what} is not an id: {value[:40]!r}") from None


def _id_list(body: dict[str, Any], name: str, *, low: int, high: int) -> list[int]:
    value = body.get(name, [])
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise Invalid(f"{name} must be a list of {low} to {high} ids")
    out = [parse_id(v, name) for v in value]
    if len(set(out)) != len(out):
        raise Invalid(f"{name} repeats an id")
    return out


def _optional_text(body: dict[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise Invalid(f"{name} must be a string of at most {limit} characters")
    return value


async def create(
    conn: AsyncConnection,
    id_gen: IdGenerator,
    config: SocialConfig,
    author_id: int,
    body: dict[str, Any],
    *,
    search: SearchConfig | None = None,
) -> Post:
    """Validates and records a post (inside the caller's transaction). Raises Invalid for
    bad fields, media that is not the author's own, ready or processing, unattached and
    unexpired, or a tagged user who does not exist or is blocked either way (the same
    answer); SocialConflict (media_in_use) for a media that is or was an avatar. An
    optional `place` (social/places.py) is recorded, and its name is the post's location
    unless one is given; the post's hashtags and place are counted and indexed for search
    in the same transaction (social/search_index.py)."""
    allowed = {"media_ids", "caption", "location", "tagged_users", "alt_text", "place"}
    unknown = set(body) - allowed
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    media_ids = _id_list(body, "media_ids", low=1, high=config.post_media_max)
    caption = _optional_text(body, "caption", config.caption_chars_max) or ""
    location = _optional_text(body, "location", config.location_chars_max)
    tagged = _id_list(body, "tagged_users", low=0, high=config.tagged_users_max)
    alt = body.get("alt_text")
    if isinstance(alt, str) or alt is None:
        alt_texts: list[str | None] = [alt] + [None] * (len(media_ids) - 1)
    elif isinstance(alt, list) and len(alt) == len(media_ids):
        alt_texts = list(alt)
    else:
        raise Invalid("alt_text must be a string or a list with one entry per media")
    for a in alt_texts:
        if a is not None and (not isinstance(a, str) or len(a) > config.alt_text_chars_max):
            raise Invalid(
                f"alt_text entries must be strings of at most "
                f"{config.alt_text_chars_max} characters"
            )

    now = time.time()
    states = await _media_states(conn, author_id, media_ids, now)
    if tagged:
        found = await accounts.get_many(conn, tagged)
        blocked = await graph.blocked_between(conn, author_id, tagged)
        for user_id in tagged:
            # A block either way answers as no such user: a tag must not reveal a block.
            if user_id not in found or user_id in blocked:
                raise Invalid(f"tagged_users: no such user {user_id}", code="no_such_user")
    tags = text.hashtags(caption, limit=config.hashtags_per_post_max)
    mentioned_names = text.mentions(caption, limit=config.mentions_per_post_max)
    mentioned: list[int] = []
    if mentioned_names:
        rows2 = await conn.execute(
            sa.select(users.c.user_id).where(users.c.username.in_(mentioned_names))
        )
        candidates = [int(r[0]) for r in rows2]
        blocked = await graph.blocked_between(conn, author_id, candidates)
        mentioned = [u for u in candidates if u not in blocked and u != author_id]

    place = None
    if body.get("place") is not None:
        place = await places.resolve(
            conn, id_gen, search or SearchConfig(), author_id, body["place"]
        )
        location = location if location is not None else place.name[: config.location_chars_max]

    post_id = id_gen.next_id()
    status = (
        PostStatus.LIVE if all(s == MediaStatus.READY for s in states) else PostStatus.PROCESSING
    )
    await conn.execute(
        posts.insert().values(
            post_id=post_id,
            author_id=author_id,
            caption=caption,
            location=location,
            status=status,
            like_count=0,
            comment_count=0,
            created_unix_s=now,
        )
    )
    await conn.execute(
        post_media.insert(),
        [
            {"post_id": post_id, "position": i, "media_id": m, "alt_text": a}
            for i, (m, a) in enumerate(zip(media_ids, alt_texts, strict=True))
        ],
    )
    await media_store.attach(conn, media_ids, now=now)
    people = [{"post_id": post_id, "user_id": u, "kind": "tagged"} for u in tagged] + [
        {"post_id": post_id, "user_id": u, "kind": "mention"} for u in mentioned
    ]
    if people:
        await conn.execute(post_users.insert(), people)
    if tags:
        await conn.execute(hashtags.insert(), [{"tag": t, "post_id": post_id} for t in tags])
    if place is not None:
        await conn.execute(post_places.insert().values(post_id=post_id, place_id=place.place_id))
    await search_index.post_added(conn, tags, None if place is None else place.place_id)
    await conn.execute(
        users.update().where(users.c.user_id == author_id).values(post_count=users.c.post_count + 1)
    )
    await notify.add(
        conn,
        id_gen,
        recipients=set(mentioned) | set(tagged),
        kind="mention",
        actor_id=author_id,
        post_id=post_id,
    )
    return Post(
        post_id=post_id,
        author_id=author_id,
        caption=caption,
        location=location,
        status=status,
        like_count=0,
        comment_count=0,
        created_unix_s=now,
        media=tuple(PostMedia(m, a) for m, a in zip(media_ids, alt_texts, strict=True)),
        tagged=tuple(tagged),
        hashtags=tuple(tags),
    )


async def _media_states(
    conn: AsyncConnection, author_id: int, media_ids: list[int], now: float
) -> list[MediaStatus]:
    """The status of each media of a new post, after checking it may be posted: the
    author's own, neither failed nor expired, in no post (400 bad_media) and no avatar
    (409 media_in_use, social/avatars.py)."""
    by_id = await media_store.rows(conn, media_ids)
    posted = await avatars.in_posts(conn, media_ids)
    states: list[MediaStatus] = []
    for media_id in media_ids:
        row = by_id.get(media_id)
        if row is None or row.owner_id != author_id:
            raise Invalid(f"media {media_id} is not one of your uploads", code="bad_media")
        if row.attached_unix_s is not None and media_id not in posted:
            raise avatars.avatar_in_use(media_id)
        if row.status in GONE:
            raise Invalid(f"media {media_id} is not one of your uploads", code="bad_media")
        if row.status == MediaStatus.FAILED:
            raise Invalid(f"media {media_id} failed to process", code="bad_media")
        if row.attached_unix_s is not None:
            raise Invalid(f"media {media_id} is already in a post", code="bad_media")
        if row.expires_unix_s is not None and row.expires_unix_s <= now:
            raise Invalid(f"media {media_id} has expired", code="bad_media")
        states.append(row.status)
    return states


async def get_many(conn: AsyncConnection, post_ids: Iterable[int]) -> dict[int, Post]:
    """Posts with their media (any status), in one query each for posts, media, tags."""
    wanted = sorted(set(post_ids))
    if not wanted:
        return {}
    rows = (await conn.execute(sa.select(posts).where(posts.c.post_id.in_(wanted)))).all()
    media_rows = await conn.execute(
        sa.select(post_media)
        .where(post_media.c.post_id.in_(wanted))
        .order_by(post_media.c.post_id, post_media.c.position)
    )
    by_post: dict[int, list[PostMedia]] = {}
    for m in media_rows:
        by_post.setdefault(m.post_id, []).append(PostMedia(m.media_id, m.alt_text))
    tagged_rows = await conn.execute(
        sa.select(post_users.c.post_id, post_users.c.user_id).where(
            post_users.c.post_id.in_(wanted), post_users.c.kind == "tagged"
        )
    )
    tagged: dict[int, list[int]] = {}
    for p, u in tagged_rows:
        tagged.setdefault(p, []).append(u)
    return {
        r.post_id: Post(
            post_id=r.post_id,
            author_id=r.author_id,
            caption=r.caption,
            location=r.location,
            status=r.status,
            like_count=r.like_count,
            comment_count=r.comment_count,
            created_unix_s=r.created_unix_s,
            media=tuple(by_post.get(r.post_id, ())),
            tagged=tuple(sorted(tagged.get(r.post_id, ()))),
        )
        for r in rows
    }


async def visible(conn: AsyncConnection, viewer: int, post_id: int) -> Post:
    """A post the viewer may see (live, or their own processing one; the author visible to
    them); NotVisible otherwise (no existence leak)."""
    post = (await get_many(conn, [post_id])).get(post_id)
    if post is None or post.status not in (PostStatus.LIVE, PostStatus.PROCESSING):
        raise NotVisible("no such post")
    if post.status == PostStatus.PROCESSING and post.author_id != viewer:
        raise NotVisible("no such post")
    owner = await accounts.get(conn, post.author_id)
    if owner is None or post.author_id not in await graph.visible_authors(
        conn, viewer, {owner.user_id: owner}
    ):
        raise NotVisible("no such post")
    return post


async def delete(conn: AsyncConnection, viewer: int, post_id: int) -> Post:
    """Deletes the viewer's own post (inside the caller's transaction): the post turns
    deleted and its media expire now. NotVisible for anyone else's post."""
    post = (await get_many(conn, [post_id])).get(post_id)
    if post is None or post.author_id != viewer or post.status == PostStatus.DELETED:
        raise NotVisible("no such post")
    now = time.time()
    await conn.execute(
        posts.update()
        .where(posts.c.post_id == post_id)
        .values(status=PostStatus.DELETED, deleted_unix_s=now)
    )
    await media_store.expire(conn, [m.media_id for m in post.media], now=now)
    await search_index.post_removed(conn, post_id)
    await conn.execute(
        users.update().where(users.c.user_id == viewer).values(post_count=users.c.post_count - 1)
    )
    return post


async def by_author(
    conn: AsyncConnection,
    author_id: int,
    *,
    before: int | None,
    limit: int,
    include_processing: bool = False,
) -> list[int]:
    """An author's post ids, newest first, strictly older than `before`."""
    states = (PostStatus.LIVE, PostStatus.PROCESSING) if include_processing else (PostStatus.LIVE,)
    query = (
        sa.select(posts.c.post_id)
        .where(posts.c.author_id == author_id, posts.c.status.in_(states))
        .order_by(posts.c.post_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(posts.c.post_id < before)
    return [int(r[0]) for r in await conn.execute(query)]


async def by_authors(
    conn: AsyncConnection,
    author_ids: Iterable[int],
    *,
    before: int | None,
    limit: int,
    processing_of: int | None = None,
) -> list[tuple[int, int]]:
    """(post_id, author_id) of the live posts of several authors, newest first: the pull
    merge (one indexed query). `processing_of`: that author's posts still waiting for
    their media count too (a reader's own, which the reader sees at once)."""
    wanted = sorted(set(author_ids))
    if not wanted:
        return []
    shown = posts.c.status == PostStatus.LIVE
    if processing_of is not None:
        shown = sa.or_(
            shown,
            sa.and_(posts.c.author_id == processing_of, posts.c.status == PostStatus.PROCESSING),
        )
    query = (
        sa.select(posts.c.post_id, posts.c.author_id)
        .where(posts.c.author_id.in_(wanted), shown)
        .order_by(posts.c.post_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(posts.c.post_id < before)
    return [(int(a), int(b)) for a, b in await conn.execute(query)]


async def set_status(conn: AsyncConnection, post_id: int, status: PostStatus) -> bool:
    """processing -> live | failed (the publish job); False if it is no longer processing."""
    assert status in (PostStatus.LIVE, PostStatus.FAILED)
    result = await conn.execute(
        posts.update()
        .where(posts.c.post_id == post_id, posts.c.status == PostStatus.PROCESSING)
        .values(status=status)
    )
    return bool(result.rowcount)


async def media_states(conn: AsyncConnection, post_id: int) -> list[str]:
    rows = await conn.execute(
        sa.select(media.c.status)
        .select_from(post_media.join(media, media.c.media_id == post_media.c.media_id))
        .where(post_media.c.post_id == post_id)
    )
    return [str(r[0]) for r in rows]


async def media_of_author(conn: AsyncConnection, author_id: int) -> list[int]:
    """The media of the author's posts that are not deleted: what an author's followers and,
    while the account was public, anyone may have seen the URLs of."""
    rows = await conn.execute(
        sa.select(post_media.c.media_id)
        .select_from(post_media.join(posts, posts.c.post_id == post_media.c.post_id))
        .where(posts.c.author_id == author_id, posts.c.status != PostStatus.DELETED)
    )
    return [int(r[0]) for r in rows]


async def by_hashtag(
    conn: AsyncConnection, tag: str, *, before: int | None, limit: int
) -> list[int]:
    """Live posts carrying a hashtag (stored lower-case), newest first, strictly older than
    `before`; whom they are visible to is the caller's to filter."""
    query = (
        sa.select(hashtags.c.post_id)
        .select_from(hashtags.join(posts, posts.c.post_id == hashtags.c.post_id))
        .where(hashtags.c.tag == tag.lower(), posts.c.status == PostStatus.LIVE)
        .order_by(hashtags.c.post_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(hashtags.c.post_id < before)
    return [int(r[0]) for r in await conn.execute(query)]
