"""Direct messages, the reads: the inbox (threads by last activity, unread counts, the last
message's preview) and a thread's catch-up by change sequence (docs/api/messages.md).

What a viewer never sees: messages they deleted for themselves, and messages whose sender
is on the other side of a block with them (either way). Both are filtered when read, so a
lifted block shows the messages again, as for notifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from social.messages import member_ids
from social.messages_schema import dm_hidden, dm_members, dm_messages, dm_reactions, dm_threads
from social.schema import blocks

PREVIEW_CHARS_MAX: Final = 100


@dataclass(frozen=True, slots=True)
class Member:
    user_id: int
    last_read_seq: int
    folder: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class Message:
    message_id: int
    thread_id: int
    seq: int
    change_seq: int
    sender_id: int
    client_id: str
    kind: str
    text: str | None
    media_id: int | None
    post_id: int | None
    story_id: int | None
    created_unix_s: float
    unsent: bool
    reactions: tuple[tuple[int, str], ...]  # (user id, emoji)


@dataclass(frozen=True, slots=True)
class Thread:
    thread_id: int
    kind: str
    title: str | None
    created_by: int
    last_seq: int
    last_change_seq: int
    members: tuple[Member, ...]
    unread: int
    last_message: Message | None
    last_message_id: int | None


def _blocked_with(viewer: int) -> Any:
    b = blocks.c
    return sa.union(
        sa.select(b.blocked_id).where(b.blocker_id == viewer),
        sa.select(b.blocker_id).where(b.blocked_id == viewer),
    )


def _shown(viewer: int) -> sa.ColumnElement[bool]:
    """The messages the viewer sees (see the module docstring)."""
    m, h = dm_messages.c, dm_hidden.c
    hidden = (
        sa.select(h.message_id).where(h.user_id == viewer, h.message_id == m.message_id).exists()
    )
    return sa.and_(~hidden, m.sender_id.not_in(_blocked_with(viewer)))


async def _reactions(
    conn: AsyncConnection, message_ids: list[int]
) -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = {}
    if not message_ids:
        return out
    r = dm_reactions.c
    rows = await conn.execute(
        sa.select(r.message_id, r.user_id, r.emoji)
        .where(r.message_id.in_(message_ids))
        .order_by(r.message_id, r.created_unix_s)
    )
    for row in rows:
        out.setdefault(int(row.message_id), []).append((int(row.user_id), str(row.emoji)))
    return out


async def _messages(conn: AsyncConnection, rows: list[Any]) -> list[Message]:
    reactions = await _reactions(conn, [int(r.message_id) for r in rows])
    return [
        Message(
            message_id=int(r.message_id),
            thread_id=int(r.thread_id),
            seq=int(r.seq),
            change_seq=int(r.change_seq),
            sender_id=int(r.sender_id),
            client_id=str(r.client_id),
            kind=str(r.kind),
            text=r.text,
            media_id=r.media_id,
            post_id=r.post_id,
            story_id=r.story_id,
            created_unix_s=float(r.created_unix_s),
            unsent=r.unsent_unix_s is not None,
            reactions=tuple(reactions.get(int(r.message_id), ())),
        )
        for r in rows
    ]


async def _thread(conn: AsyncConnection, viewer: int, row: Any) -> Thread:
    m, mem = dm_messages.c, dm_members.c
    members = [
        Member(int(r.user_id), int(r.last_read_seq), str(r.folder), bool(r.accepted))
        for r in await conn.execute(
            sa.select(dm_members).where(mem.thread_id == row.thread_id).order_by(mem.user_id)
        )
    ]
    mine = next(x for x in members if x.user_id == viewer)
    shown = _shown(viewer)
    unread = (
        await conn.execute(
            sa.select(sa.func.count()).where(
                m.thread_id == row.thread_id,
                m.seq > mine.last_read_seq,
                m.sender_id != viewer,
                m.unsent_unix_s.is_(None),
                shown,
            )
        )
    ).scalar_one()
    last_rows = (
        await conn.execute(
            sa.select(dm_messages)
            .where(m.thread_id == row.thread_id, shown)
            .order_by(m.seq.desc())
            .limit(1)
        )
    ).all()
    last = (await _messages(conn, list(last_rows)))[0] if last_rows else None
    if last is not None and last.text is not None and len(last.text) > PREVIEW_CHARS_MAX:
        last = _replace_text(last, last.text[:PREVIEW_CHARS_MAX])
    return Thread(
        thread_id=int(row.thread_id),
        kind=str(row.kind),
        title=row.title,
        created_by=int(row.created_by),
        last_seq=int(row.last_seq),
        last_change_seq=int(row.last_change_seq),
        members=tuple(members),
        unread=int(unread),
        last_message=last,
        last_message_id=row.last_message_id,
    )


def _replace_text(message: Message, text: str) -> Message:
    from dataclasses import replace

    return replace(message, text=text)


async def inbox(
    db: Database, viewer: int, *, folder: str, before: int | None, limit: int
) -> list[Thread]:
    """A page of the viewer's threads in `folder`, newest activity first, strictly older
    than `before` (a thread's last_message_id, the cursor)."""
    mem, t = dm_members.c, dm_threads.c
    query = (
        sa.select(dm_threads)
        .join(dm_members, mem.thread_id == t.thread_id)
        .where(mem.user_id == viewer, mem.folder == folder, mem.last_message_id.is_not(None))
        .order_by(mem.last_message_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(mem.last_message_id < before)
    async with db.snapshot() as conn:
        rows = (await conn.execute(query)).all()
        return [await _thread(conn, viewer, r) for r in rows]


async def thread(db: Database, viewer: int, thread_id: int) -> Thread:
    async with db.snapshot() as conn:
        await member_ids(conn, thread_id, viewer)
        row = (
            await conn.execute(sa.select(dm_threads).where(dm_threads.c.thread_id == thread_id))
        ).one()
        return await _thread(conn, viewer, row)


@dataclass(frozen=True, slots=True)
class Changes:
    messages: list[Message]  # in change_seq order
    next_after_seq: int  # pass as after_seq for the next page
    has_more: bool
    last_change_seq: int


async def changes(
    db: Database,
    viewer: int,
    thread_id: int,
    *,
    after_seq: int,
    limit: int,
    message_id: int | None = None,
) -> Changes:
    """The thread's messages changed after change sequence `after_seq` (0: all), each once
    at its latest state, oldest change first. A new message's change_seq is taken when it
    is sent, so a client that resumes from the last change_seq it saw gets every message it
    missed exactly once, in order. `message_id`: that message only."""
    m = dm_messages.c
    query = (
        sa.select(dm_messages)
        .where(m.thread_id == thread_id, m.change_seq > after_seq)
        .order_by(m.change_seq)
        .limit(limit)
    )
    if message_id is not None:
        query = query.where(m.message_id == message_id)
    async with db.snapshot() as conn:
        await member_ids(conn, thread_id, viewer)
        rows = (await conn.execute(query)).all()
        shown_ids = (
            {
                int(r[0])
                for r in await conn.execute(
                    sa.select(m.message_id).where(
                        m.message_id.in_([int(r.message_id) for r in rows]), _shown(viewer)
                    )
                )
            }
            if rows
            else set()
        )
        last_change = (
            await conn.execute(
                sa.select(dm_threads.c.last_change_seq).where(dm_threads.c.thread_id == thread_id)
            )
        ).scalar_one()
        visible = [r for r in rows if int(r.message_id) in shown_ids]
        messages = await _messages(conn, visible)
    next_after = int(rows[-1].change_seq) if rows else max(after_seq, 0)
    return Changes(messages, next_after, len(rows) == limit, int(last_change))
