"""Notifications: recorded in the transaction of the event that causes them (a like, a
comment, a follow, a follow request, a mention), never to oneself, and grouped when read
("X and 5 others liked your post"): one group per (kind, post) for likes, comments and
mentions, one per kind for follows and follow requests.

A block either way hides, when read (list and unread count), the notifications whose actor
or whose post's author is on the other side of it; they are kept, and show again if the
block is lifted, as the likes and comments they tell of do."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from realtime import events
from social.schema import blocks, notifications, posts

KINDS: Final = ("like", "comment", "follow", "follow_request", "mention")
LOCK: Final = "social"
# Actors named in one group (the rest are counted).
GROUP_ACTORS_MAX: Final = 3


async def add(
    conn: AsyncConnection,
    id_gen: IdGenerator,
    *,
    recipients: Iterable[int],
    kind: str,
    actor_id: int,
    post_id: int | None = None,
    comment_id: int | None = None,
) -> None:
    assert kind in KINDS
    now = time.time()
    rows = [
        {
            "notification_id": id_gen.next_id(),
            "user_id": user_id,
            "kind": kind,
            "actor_id": actor_id,
            "post_id": post_id,
            "comment_id": comment_id,
            "created_unix_s": now,
        }
        for user_id in sorted(set(recipients))
        if user_id != actor_id
    ]
    if rows:
        await conn.execute(notifications.insert(), rows)
        for row in rows:  # published by the API once the transaction committed
            events.notification_created(events.NotificationEvent(**_event_fields(row)))


def _event_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: row[k]
        for k in ("notification_id", "user_id", "kind", "actor_id", "post_id", "comment_id")
    }


async def retract(
    conn: AsyncConnection, *, recipient: int, kind: str, actor_id: int, post_id: int | None = None
) -> None:
    """Takes back a notification whose cause was undone (an unlike, a withdrawn request)."""
    query = notifications.delete().where(
        notifications.c.user_id == recipient,
        notifications.c.kind == kind,
        notifications.c.actor_id == actor_id,
    )
    if post_id is not None:
        query = query.where(notifications.c.post_id == post_id)
    await conn.execute(query)


def _shown(user_id: int) -> sa.ColumnElement[bool]:
    """The user's notifications that no block hides (see the module docstring)."""
    n, b = notifications.c, blocks.c
    blocked = sa.union(
        sa.select(b.blocked_id).where(b.blocker_id == user_id),
        sa.select(b.blocker_id).where(b.blocked_id == user_id),
    )
    about_blocked = (
        sa.select(posts.c.post_id)
        .where(posts.c.post_id == n.post_id, posts.c.author_id.in_(blocked))
        .exists()
    )
    return sa.and_(n.user_id == user_id, n.actor_id.not_in(blocked), ~about_blocked)


@dataclass(frozen=True, slots=True)
class Group:
    kind: str
    post_id: int | None
    latest_id: int  # the group's newest notification: its place in the list and its cursor
    latest_unix_s: float
    actor_ids: tuple[int, ...]  # newest first, at most GROUP_ACTORS_MAX
    actors_total: int
    unread: int


async def groups(
    db: Database, user_id: int, *, before: int | None, limit: int
) -> tuple[list[Group], int]:
    """A page of groups, newest first (strictly older than `before`, a group's latest_id),
    and the user's unread count, both without what a block hides."""
    n = notifications.c
    shown = _shown(user_id)
    # A literal, not a bound 0: PostgreSQL matches the selected expression to the grouped
    # one only when both are the same text (two parameters are two expressions to it).
    post_key = sa.func.coalesce(n.post_id, sa.literal_column("0"))
    group_key = (n.kind, post_key)
    latest = sa.func.max(n.notification_id).label("latest_id")
    query = (
        sa.select(
            n.kind,
            post_key.label("post_id"),
            latest,
            sa.func.count(sa.distinct(n.actor_id)).label("actors_total"),
            sa.func.sum(sa.case((n.read_unix_s.is_(None), 1), else_=0)).label("unread"),
        )
        .where(shown)
        .group_by(*group_key)
        .order_by(latest.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.having(latest < before)
    async with db.snapshot() as conn:
        rows = (await conn.execute(query)).all()
        out: list[Group] = []
        for r in rows:
            actors = await conn.execute(
                sa.select(n.actor_id, sa.func.max(n.notification_id).label("at"))
                .where(
                    shown,
                    n.kind == r.kind,
                    sa.func.coalesce(n.post_id, 0) == r.post_id,
                )
                .group_by(n.actor_id)
                .order_by(sa.desc("at"))
                .limit(GROUP_ACTORS_MAX)
            )
            latest_row = (
                await conn.execute(
                    sa.select(n.created_unix_s).where(n.notification_id == r.latest_id)
                )
            ).scalar_one()
            out.append(
                Group(
                    kind=r.kind,
                    post_id=int(r.post_id) or None,
                    latest_id=int(r.latest_id),
                    latest_unix_s=float(latest_row),
                    actor_ids=tuple(int(a[0]) for a in actors),
                    actors_total=int(r.actors_total),
                    unread=int(r.unread or 0),
                )
            )
        unread = (
            await conn.execute(sa.select(sa.func.count()).where(shown, n.read_unix_s.is_(None)))
        ).scalar_one()
    return out, int(unread)


async def mark_read(db: Database, user_id: int, *, up_to: int | None) -> int:
    """Marks the user's notifications read (those with id <= up_to, or all); returns how
    many changed."""
    n = notifications.c
    query = notifications.update().where(n.user_id == user_id, n.read_unix_s.is_(None))
    if up_to is not None:
        query = query.where(n.notification_id <= up_to)
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(query.values(read_unix_s=time.time()))
    return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: int
    kind: str
    actor_id: int
    post_id: int | None
    created_unix_s: float


async def page(
    db: Database,
    user_id: int,
    *,
    before: int | None,
    after: int | None,
    limit: int,
    kinds: Iterable[str] = KINDS,
) -> list[Notification]:
    """One by one rather than grouped (the Mastodon API's list), newest first, strictly
    between `after` and `before`, without what a block hides."""
    n = notifications.c
    query = (
        sa.select(n.notification_id, n.kind, n.actor_id, n.post_id, n.created_unix_s)
        .where(_shown(user_id), n.kind.in_(sorted(set(kinds))))
        .order_by(n.notification_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(n.notification_id < before)
    if after is not None:
        query = query.where(n.notification_id > after)
    async with db.snapshot() as conn:
        rows = await conn.execute(query)
        return [
            Notification(
                int(r.notification_id),
                r.kind,
                int(r.actor_id),
                None if r.post_id is None else int(r.post_id),
                float(r.created_unix_s),
            )
            for r in rows
        ]
