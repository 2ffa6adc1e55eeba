"""Highlights: named groups of the owner's own stories kept on the profile after they
expire (docs/api/stories.md).

Rules:
- A highlight holds 1 to [social] highlight_stories_max of its owner's stories whose media
  are not reclaimed yet (live or archived); an owner has at most highlights_per_user_max.
- A story in a highlight is never reclaimed by the sweep (social/story_sweep.py); taken out
  of its last highlight after expiry, the next sweep reclaims it.
- Others see a highlight under the owner's privacy and blocks, and only the stories they
  could have seen live (a close-friends story stays with the close friends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from social import accounts, graph, posts, stories
from social.config import SocialConfig
from social.errors import Invalid, NotVisible
from social.stories import LOCK, Story
from social.stories_schema import highlight_stories, highlights


@dataclass(frozen=True, slots=True)
class Highlight:
    highlight_id: int
    owner_id: int
    title: str
    created_unix_s: float
    updated_unix_s: float
    stories: tuple[Story, ...]  # in the highlight's order, those the viewer may see


def title_of(body: dict[str, Any], config: SocialConfig, *, required: bool) -> str | None:
    value = body.get("title")
    if value is None and not required:
        return None
    limit = config.highlight_title_chars_max
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise Invalid(f"title must be a non-blank string of at most {limit} characters")
    return value


def story_ids_of(body: dict[str, Any], config: SocialConfig, *, required: bool) -> list[int] | None:
    value = body.get("story_ids")
    if value is None and not required:
        return None
    limit = config.highlight_stories_max
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise Invalid(f"story_ids must be a list of 1 to {limit} story ids")
    out = [posts.parse_id(v, "story_ids") for v in value]
    if len(set(out)) != len(out):
        raise Invalid("story_ids holds a story twice")
    return out


async def _check_stories(conn: AsyncConnection, owner: int, story_ids: list[int]) -> None:
    found = await stories.get_many(conn, story_ids)
    for story_id in story_ids:
        story = found.get(story_id)
        if story is None or story.author_id != owner or story.reclaimed_unix_s is not None:
            raise NotVisible(f"no such story of yours: {story_id} (or its media is gone)")


async def _set_stories(conn: AsyncConnection, highlight_id: int, story_ids: list[int]) -> None:
    h = highlight_stories.c
    await conn.execute(highlight_stories.delete().where(h.highlight_id == highlight_id))
    await conn.execute(
        highlight_stories.insert(),
        [
            {"highlight_id": highlight_id, "story_id": s, "position": i}
            for i, s in enumerate(story_ids)
        ],
    )


async def create(
    db: Database,
    ids: IdGenerator,
    config: SocialConfig,
    owner: int,
    *,
    title: str,
    story_ids: list[int],
) -> int:
    now = time.time()
    h = highlights.c
    async with db.transaction(lock=LOCK) as conn:
        count = (
            await conn.execute(sa.select(sa.func.count()).where(h.owner_id == owner))
        ).scalar_one()
        if count >= config.highlights_per_user_max:
            raise Invalid(
                f"at most {config.highlights_per_user_max} highlights per account",
                code="highlights_full",
            )
        await _check_stories(conn, owner, story_ids)
        highlight_id = ids.next_id()
        await conn.execute(
            highlights.insert().values(
                highlight_id=highlight_id,
                owner_id=owner,
                title=title,
                created_unix_s=now,
                updated_unix_s=now,
            )
        )
        await _set_stories(conn, highlight_id, story_ids)
    return highlight_id


async def _owned(conn: AsyncConnection, owner: int, highlight_id: int) -> None:
    h = highlights.c
    row = (await conn.execute(sa.select(h.owner_id).where(h.highlight_id == highlight_id))).first()
    if row is None or row.owner_id != owner:
        raise NotVisible("no such highlight")


async def update(
    db: Database,
    owner: int,
    highlight_id: int,
    *,
    title: str | None,
    story_ids: list[int] | None,
) -> None:
    """Renames and/or replaces the stories of the owner's highlight."""
    async with db.transaction(lock=LOCK) as conn:
        await _owned(conn, owner, highlight_id)
        values: dict[str, Any] = {"updated_unix_s": time.time()}
        if title is not None:
            values["title"] = title
        if story_ids is not None:
            await _check_stories(conn, owner, story_ids)
            await _set_stories(conn, highlight_id, story_ids)
        await conn.execute(
            highlights.update().where(highlights.c.highlight_id == highlight_id).values(**values)
        )


async def delete(db: Database, owner: int, highlight_id: int) -> None:
    """Deletes the owner's highlight; its stories, once expired, go to the next sweep."""
    async with db.transaction(lock=LOCK) as conn:
        await _owned(conn, owner, highlight_id)
        await conn.execute(
            highlight_stories.delete().where(highlight_stories.c.highlight_id == highlight_id)
        )
        await conn.execute(highlights.delete().where(highlights.c.highlight_id == highlight_id))


async def _assemble(conn: AsyncConnection, viewer: int, rows: list[Any]) -> list[Highlight]:
    h = highlight_stories.c
    wanted = [int(r.highlight_id) for r in rows]
    members = (
        await conn.execute(
            sa.select(h.highlight_id, h.story_id)
            .where(h.highlight_id.in_(wanted))
            .order_by(h.highlight_id, h.position)
        )
    ).all()
    found = await stories.get_many(conn, [int(m.story_id) for m in members])
    seen = {
        s.story_id
        for s in await stories.visible_among(
            conn, viewer, [s for s in found.values() if s.reclaimed_unix_s is None]
        )
    }
    by_highlight: dict[int, list[Story]] = {i: [] for i in wanted}
    for m in members:
        if int(m.story_id) in seen:
            by_highlight[int(m.highlight_id)].append(found[int(m.story_id)])
    return [
        Highlight(
            int(r.highlight_id),
            int(r.owner_id),
            str(r.title),
            float(r.created_unix_s),
            float(r.updated_unix_s),
            tuple(by_highlight[int(r.highlight_id)]),
        )
        for r in rows
    ]


async def of_owner(
    db: Database, viewer: int, owner: int, *, before: int | None, limit: int
) -> list[Highlight]:
    """The owner's highlights the viewer may see (NotVisible for a private owner the viewer
    does not follow, or a block), newest first; highlights left empty for this viewer
    (only close-friends stories) are left out."""
    h = highlights.c
    async with db.snapshot() as conn:
        user = await accounts.get(conn, owner)
        if user is None or owner not in await graph.visible_authors(conn, viewer, {owner: user}):
            raise NotVisible("no such user")
        query = sa.select(highlights).where(h.owner_id == owner).order_by(h.highlight_id.desc())
        if before is not None:
            query = query.where(h.highlight_id < before)
        rows = (await conn.execute(query.limit(limit))).all()
        found = await _assemble(conn, viewer, list(rows))
    return [x for x in found if x.stories or viewer == owner]


async def get(db: Database, viewer: int, highlight_id: int) -> Highlight:
    async with db.snapshot() as conn:
        row = (
            await conn.execute(
                sa.select(highlights).where(highlights.c.highlight_id == highlight_id)
            )
        ).first()
        if row is None:
            raise NotVisible("no such highlight")
        user = await accounts.get(conn, int(row.owner_id))
        if user is None or user.user_id not in await graph.visible_authors(
            conn, viewer, {user.user_id: user}
        ):
            raise NotVisible("no such highlight")
        found = (await _assemble(conn, viewer, [row]))[0]
    if not found.stories and viewer != found.owner_id:
        raise NotVisible("no such highlight")
    return found
