"""Likes, saves and comments (one level of replies). Likes and saves are idempotent. A
post's like and comment counts change in the transaction of the like or comment; readers
take them as they are (counts may trail concurrent likes, the viewer's own flags never)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from realtime import events
from social import graph, notify, posts, text
from social.config import SocialConfig
from social.errors import Invalid, NotVisible
from social.schema import comments, likes, saves, users
from social.schema import posts as post_t

LOCK: Final = "social"


async def like(db: Database, id_gen: IdGenerator, viewer: int, post_id: int) -> bool:
    """Likes a post the viewer may see; True when it was not liked before. A hot write (one
    thread hop on SQLite, common/quickwrite.py); its notification reaches the request only
    if it commits (realtime/events.py `staged`)."""

    async def unit(conn: AsyncConnection) -> bool:
        post = await posts.visible(conn, viewer, post_id)
        done = await conn.execute(
            sa.select(likes.c.user_id).where(likes.c.user_id == viewer, likes.c.post_id == post_id)
        )
        if done.first() is not None:
            return False
        await conn.execute(
            likes.insert().values(user_id=viewer, post_id=post_id, created_unix_s=time.time())
        )
        await conn.execute(
            post_t.update()
            .where(post_t.c.post_id == post_id)
            .values(like_count=post_t.c.like_count + 1)
        )
        await notify.add(
            conn,
            id_gen,
            recipients=[post.author_id],
            kind="like",
            actor_id=viewer,
            post_id=post_id,
        )
        return True

    try:
        with events.staged():
            return await db.write(unit, lock=LOCK)
    except IntegrityError:  # a concurrent like of the same post by the same viewer
        return False


async def unlike(db: Database, viewer: int, post_id: int) -> bool:
    async with db.transaction(lock=LOCK) as conn:
        post = await posts.visible(conn, viewer, post_id)
        gone = await conn.execute(
            likes.delete().where(likes.c.user_id == viewer, likes.c.post_id == post_id)
        )
        if not gone.rowcount:
            return False
        await conn.execute(
            post_t.update()
            .where(post_t.c.post_id == post_id)
            .values(like_count=post_t.c.like_count - 1)
        )
        await notify.retract(
            conn, recipient=post.author_id, kind="like", actor_id=viewer, post_id=post_id
        )
    return True


async def save(db: Database, viewer: int, post_id: int, *, saved: bool) -> bool:
    """Saves (or unsaves) a post; True when something changed."""
    async with db.transaction(lock=LOCK) as conn:
        await posts.visible(conn, viewer, post_id)
        if not saved:
            gone = await conn.execute(
                saves.delete().where(saves.c.user_id == viewer, saves.c.post_id == post_id)
            )
            return bool(gone.rowcount)
        done = await conn.execute(
            sa.select(saves.c.user_id).where(saves.c.user_id == viewer, saves.c.post_id == post_id)
        )
        if done.first() is not None:
            return False
        await conn.execute(
            saves.insert().values(user_id=viewer, post_id=post_id, created_unix_s=time.time())
        )
    return True


async def viewer_flags(
    conn: AsyncConnection, viewer: int, post_ids: Iterable[int]
) -> tuple[set[int], set[int]]:
    """(liked, saved): the posts among post_ids the viewer has liked and saved (exact)."""
    wanted = sorted(set(post_ids))
    if not wanted:
        return set(), set()
    liked = await conn.execute(
        sa.select(likes.c.post_id).where(likes.c.user_id == viewer, likes.c.post_id.in_(wanted))
    )
    saved = await conn.execute(
        sa.select(saves.c.post_id).where(saves.c.user_id == viewer, saves.c.post_id.in_(wanted))
    )
    return {int(r[0]) for r in liked}, {int(r[0]) for r in saved}


async def liked_or_saved(
    conn: AsyncConnection, viewer: int, *, saved: bool, before: int | None, limit: int
) -> list[int]:
    """The ids of the posts the viewer has liked (or saved, `saved`), newest post first,
    strictly older than `before` (a post id, the cursor). Not filtered: the caller keeps
    those the viewer may still see."""
    table = saves if saved else likes
    query = (
        sa.select(table.c.post_id)
        .where(table.c.user_id == viewer)
        .order_by(table.c.post_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(table.c.post_id < before)
    return [int(r[0]) for r in await conn.execute(query)]


@dataclass(frozen=True, slots=True)
class Comment:
    comment_id: int
    post_id: int
    author_id: int
    parent_id: int | None
    text: str
    reply_count: int
    created_unix_s: float


async def comment(
    db: Database,
    id_gen: IdGenerator,
    config: SocialConfig,
    viewer: int,
    post_id: int,
    body_text: object,
    *,
    parent_id: int | None,
) -> Comment:
    if not isinstance(body_text, str) or not body_text.strip():
        raise Invalid("text must be a non-empty string")
    if len(body_text) > config.comment_chars_max:
        raise Invalid(f"text is longer than {config.comment_chars_max} characters")
    now = time.time()

    async def unit(conn: AsyncConnection) -> Comment:
        post = await posts.visible(conn, viewer, post_id)
        recipients = {post.author_id}
        if parent_id is not None:
            parent = (
                await conn.execute(sa.select(comments).where(comments.c.comment_id == parent_id))
            ).first()
            # A comment by someone blocked either way is hidden from the viewer, so a reply
            # to it is refused exactly as a reply to no comment at all.
            if (
                parent is None
                or parent.post_id != post_id
                or parent.deleted_unix_s is not None
                or await graph.blocked_between(conn, viewer, [parent.author_id])
            ):
                raise Invalid("parent_id is not a comment of this post", code="bad_parent")
            if parent.parent_id is not None:
                raise Invalid(
                    "replies go one level deep: reply to the comment itself", code="bad_parent"
                )
            recipients.add(parent.author_id)
            await conn.execute(
                comments.update()
                .where(comments.c.comment_id == parent_id)
                .values(reply_count=comments.c.reply_count + 1)
            )
        row = Comment(id_gen.next_id(), post_id, viewer, parent_id, body_text, 0, now)
        await conn.execute(
            comments.insert().values(
                comment_id=row.comment_id,
                post_id=post_id,
                author_id=viewer,
                parent_id=parent_id,
                text=body_text,
                reply_count=0,
                created_unix_s=now,
            )
        )
        await conn.execute(
            post_t.update()
            .where(post_t.c.post_id == post_id)
            .values(comment_count=post_t.c.comment_count + 1)
        )
        await notify.add(
            conn,
            id_gen,
            recipients=recipients,
            kind="comment",
            actor_id=viewer,
            post_id=post_id,
            comment_id=row.comment_id,
        )
        names = text.mentions(body_text, limit=config.mentions_per_post_max)
        if names:
            found = await conn.execute(
                sa.select(users.c.user_id).where(users.c.username.in_(names))
            )
            named = {int(r[0]) for r in found}
            named -= await graph.blocked_between(conn, viewer, named)
            await notify.add(
                conn,
                id_gen,
                recipients=named - recipients,
                kind="mention",
                actor_id=viewer,
                post_id=post_id,
                comment_id=row.comment_id,
            )
        return row

    # A hot write, as a like; its notifications reach the request only if it commits.
    with events.staged():
        return await db.write(unit, lock=LOCK)


async def delete_comment(db: Database, viewer: int, post_id: int, comment_id: int) -> None:
    """The comment's author may delete it whatever became of the post (deleted, or its
    author blocking them), the post's author any comment on it; NotVisible otherwise."""
    async with db.transaction(lock=LOCK) as conn:
        row = (
            await conn.execute(sa.select(comments).where(comments.c.comment_id == comment_id))
        ).first()
        if row is None or row.post_id != post_id or row.deleted_unix_s is not None:
            raise NotVisible("no such comment")
        if viewer != row.author_id:
            author = (
                await conn.execute(sa.select(post_t.c.author_id).where(post_t.c.post_id == post_id))
            ).scalar_one_or_none()
            if author != viewer:
                raise NotVisible("no such comment")
        await conn.execute(
            comments.update()
            .where(comments.c.comment_id == comment_id)
            .values(deleted_unix_s=time.time())
        )
        await conn.execute(
            post_t.update()
            .where(post_t.c.post_id == post_id)
            .values(comment_count=post_t.c.comment_count - 1)
        )
        if row.parent_id is not None:
            await conn.execute(
                comments.update()
                .where(comments.c.comment_id == row.parent_id)
                .values(reply_count=comments.c.reply_count - 1)
            )


async def comment_page(
    db: Database,
    viewer: int,
    post_id: int,
    *,
    parent_id: int | None,
    after: int | None,
    limit: int,
) -> tuple[list[Comment], int | None]:
    """Comments of a post (or replies to one comment), oldest first, strictly after the
    cursor `after`, and the cursor of the next page (None at the end). Comments by users
    blocked either way are left out (a page may hold fewer than `limit`)."""
    async with db.snapshot() as conn:
        await posts.visible(conn, viewer, post_id)
        c = comments.c
        query = (
            sa.select(comments)
            .where(c.post_id == post_id, c.deleted_unix_s.is_(None))
            .order_by(c.comment_id)
        )
        query = query.where(
            c.parent_id.is_(None) if parent_id is None else c.parent_id == parent_id
        )
        if after is not None:
            query = query.where(c.comment_id > after)
        rows = (await conn.execute(query.limit(limit + 1))).all()
        more = len(rows) > limit
        rows = rows[:limit]
        blocked = await graph.blocked_between(conn, viewer, [r.author_id for r in rows])
    next_after = rows[-1].comment_id if more and rows else None
    return [
        Comment(
            r.comment_id,
            r.post_id,
            r.author_id,
            r.parent_id,
            r.text,
            r.reply_count,
            r.created_unix_s,
        )
        for r in rows
        if r.author_id not in blocked
    ], next_after
