"""Direct messages, the writes: send (creating the thread on the first message), react,
unsend, delete for me, read receipts, accepting a request (docs/api/messages.md).

Rules:
- Durable before acknowledged: every change commits in one write transaction before the
  function returns; the caller publishes wake-ups (realtime/) only after that, so a lost
  publish loses nothing (catch-up by change_seq has it).
- Idempotent sends: (thread, sender, client_id) is unique; a retry returns the message the
  first attempt made (`Sent.created` False) and changes nothing.
- Requests: a member who does not follow the thread's creator gets the thread in their
  requests folder until they accept it or reply.
- Blocks end delivery both ways: a 1:1 thread (or a new group) with someone on the other side
  of a block refuses the send (403 blocked); in a group, the messages of a blocked or blocking
  member are neither shown to nor published for the other (social/threads.py).
- The per-sender rate limit (messages_per_hour_max) is taken by the API before the send.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from social import accounts, graph, posts
from social.errors import Forbidden, Invalid, NotVisible
from social.messages_schema import (
    CLIENT_ID_CHARS_MAX,
    EMOJI_CHARS_MAX,
    TITLE_CHARS_MAX,
    dm_hidden,
    dm_members,
    dm_messages,
    dm_reactions,
    dm_threads,
)
from transformer.schema import media as media_table

LOCK: Final = "messages"
KINDS: Final = ("text", "media", "post", "story_reply")
MESSAGE_CHARS_MAX: Final = 2200
# Members of a group thread, its creator included.
GROUP_MEMBERS_MAX: Final = 32
INBOX: Final = "inbox"
REQUESTS: Final = "requests"
FOLDERS: Final = (INBOX, REQUESTS)
_MEDIA_USABLE: Final = ("processing", "ready")


@dataclass(frozen=True, slots=True)
class Content:
    """A message's content, checked (`content_of`)."""

    kind: str
    text: str | None = None
    media_id: int | None = None
    post_id: int | None = None
    story_id: int | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    thread_id: int
    message_id: int
    seq: int
    change_seq: int
    created: bool  # False: a retry found the message its first attempt made
    created_unix_s: float
    # Who gets a wake-up: the members other than the sender, minus blocks either way.
    deliver_to: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Changed:
    """A reaction, an unsend, a read receipt or an acceptance that committed."""

    thread_id: int
    message_id: int | None
    change_seq: int
    notify: tuple[int, ...]  # members to wake (blocks removed)


def check_client_id(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= CLIENT_ID_CHARS_MAX
        or not value.isascii()
        or not value.isprintable()
    ):
        raise Invalid(
            f"client_id must be 1 to {CLIENT_ID_CHARS_MAX} printable ASCII characters "
            "(the same id for every retry of one message)"
        )
    return value


def _text(body: dict[str, Any], *, required: bool) -> str | None:
    value = body.get("text")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MESSAGE_CHARS_MAX:
        raise Invalid(f"text must be a non-blank string of at most {MESSAGE_CHARS_MAX} characters")
    return value


def content_of(body: dict[str, Any]) -> Content:
    kind = body.get("kind", "text")
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    if kind == "text":
        return Content(kind, text=_text(body, required=True))
    if kind == "media":
        return Content(
            kind,
            text=_text(body, required=False),
            media_id=posts.parse_id(body.get("media_id"), "media_id"),
        )
    if kind == "post":
        return Content(
            kind,
            text=_text(body, required=False),
            post_id=posts.parse_id(body.get("post_id"), "post_id"),
        )
    return Content(
        kind,
        text=_text(body, required=True),
        story_id=posts.parse_id(body.get("story_id"), "story_id"),
    )


def title_of(body: dict[str, Any]) -> str | None:
    value = body.get("title")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > TITLE_CHARS_MAX:
        raise Invalid(f"title must be a non-blank string of at most {TITLE_CHARS_MAX} characters")
    return value


async def _check_content(conn: AsyncConnection, sender: int, content: Content, now: float) -> None:
    if content.media_id is not None:
        m = media_table.c
        row = (
            await conn.execute(
                sa.select(m.owner_id, m.status).where(m.media_id == content.media_id)
            )
        ).first()
        if row is None or row.owner_id != sender or row.status not in _MEDIA_USABLE:
            raise NotVisible("no such media (send a media of your own, uploaded and not expired)")
        # Attached: the unattached-media expiry must not take it.
        await conn.execute(
            media_table.update()
            .where(m.media_id == content.media_id, m.expires_unix_s.is_not(None))
            .values(expires_unix_s=None, attached_unix_s=now)
        )
    if content.post_id is not None:
        await posts.visible(conn, sender, content.post_id)


async def _members(conn: AsyncConnection, thread_id: int) -> dict[int, Any]:
    rows = await conn.execute(sa.select(dm_members).where(dm_members.c.thread_id == thread_id))
    return {int(r.user_id): r for r in rows}


async def member_ids(conn: AsyncConnection, thread_id: int, viewer: int) -> list[int]:
    """The thread's members; NotVisible unless the viewer is one of them."""
    members = await _members(conn, thread_id)
    if viewer not in members:
        raise NotVisible("no such thread")
    return sorted(members)


async def _refuse_blocked(conn: AsyncConnection, sender: int, others: list[int]) -> None:
    if await graph.blocked_between(conn, sender, others):
        raise Forbidden("you cannot message this account", code="blocked")


async def _folder_for(conn: AsyncConnection, member: int, creator: int) -> str:
    if member == creator or creator in await graph.followed_among(conn, member, [creator]):
        return INBOX
    return REQUESTS


async def _open_thread(
    conn: AsyncConnection,
    ids: IdGenerator,
    sender: int,
    recipients: list[int],
    title: str | None,
    now: float,
) -> int:
    """The 1:1 thread of the pair (found or made), or a new group thread."""
    others = sorted(set(recipients) - {sender})
    if not others:
        raise Invalid("recipient_ids must name someone other than you")
    if len(others) + 1 > GROUP_MEMBERS_MAX:
        raise Invalid(f"a thread has at most {GROUP_MEMBERS_MAX} members, you included")
    found = await accounts.get_many(conn, others)
    if len(found) != len(others):
        raise NotVisible("no such user")
    await _refuse_blocked(conn, sender, others)
    direct_key = None
    if len(others) == 1 and title is None:
        lo, hi = sorted((sender, others[0]))
        direct_key = f"{lo}:{hi}"
        existing = (
            await conn.execute(
                sa.select(dm_threads.c.thread_id).where(dm_threads.c.direct_key == direct_key)
            )
        ).scalar()
        if existing is not None:
            return int(existing)
    thread_id = ids.next_id()
    await conn.execute(
        dm_threads.insert().values(
            thread_id=thread_id,
            kind="direct" if direct_key else "group",
            direct_key=direct_key,
            title=title,
            created_by=sender,
            created_unix_s=now,
            last_seq=0,
            last_change_seq=0,
            last_message_id=None,
        )
    )
    rows = []
    for user in [sender, *others]:
        folder = await _folder_for(conn, user, sender)
        rows.append(
            {
                "thread_id": thread_id,
                "user_id": user,
                "folder": folder,
                "accepted": folder == INBOX,
                "last_read_seq": 0,
                "joined_unix_s": now,
                "last_message_id": None,
            }
        )
    await conn.execute(dm_members.insert(), rows)
    return thread_id


async def _next_change(
    conn: AsyncConnection, thread_id: int, *, message_id: int | None
) -> tuple[int, int, str]:
    """Takes the thread's next change number (and, for a new message `message_id`, its next
    message number, and makes it the thread's last message) in one UPDATE ... RETURNING; the
    write lock of the transaction makes the numbers unique. Returns (last_seq, change_seq,
    the thread's kind)."""
    t = dm_threads.c
    values: dict[str, Any] = {"last_change_seq": t.last_change_seq + 1}
    if message_id is not None:
        values["last_seq"] = t.last_seq + 1
        values["last_message_id"] = message_id
    row = (
        await conn.execute(
            dm_threads.update()
            .where(t.thread_id == thread_id)
            .values(**values)
            .returning(t.last_seq, t.last_change_seq, t.kind)
        )
    ).one()
    return int(row.last_seq), int(row.last_change_seq), str(row.kind)


async def _deliverable(conn: AsyncConnection, sender: int, members: list[int]) -> tuple[int, ...]:
    others = [m for m in members if m != sender]
    blocked = await graph.blocked_between(conn, sender, others)
    return tuple(m for m in others if m not in blocked)


async def _retried_first(conn: AsyncConnection, sender: int, client_id: str) -> int | None:
    """The thread whose first message this sender sent with this client id (a retry of the
    send that made a group must not make a second group)."""
    m, t = dm_messages.c, dm_threads.c
    found = (
        await conn.execute(
            sa.select(m.thread_id)
            .join(dm_threads, t.thread_id == m.thread_id)
            .where(
                m.sender_id == sender, m.client_id == client_id, m.seq == 1, t.created_by == sender
            )
        )
    ).first()
    return None if found is None else int(found[0])


async def send(
    db: Database,
    ids: IdGenerator,
    sender: int,
    *,
    client_id: str,
    content: Content,
    thread_id: int | None = None,
    recipients: list[int] | None = None,
    title: str | None = None,
) -> Sent:
    """Commits one message (to `thread_id`, or to the thread of `recipients`, made on the
    first message) and returns it; a retry with the same client_id returns the first."""
    now = time.time()

    async def unit(conn: AsyncConnection) -> Sent:
        return await _send(conn, ids, sender, client_id, content, thread_id, recipients, title, now)

    # The hottest write: one thread hop on SQLite (common/quickwrite.py), and sends that
    # arrive while the writer is busy share one COMMIT (group commit, common/db.py).
    return await db.write(unit, lock=LOCK, group=True)


async def _send(
    conn: AsyncConnection,
    ids: IdGenerator,
    sender: int,
    client_id: str,
    content: Content,
    thread_id: int | None,
    recipients: list[int] | None,
    title: str | None,
    now: float,
) -> Sent:
    """send's write transaction; awaits only conn.execute (Database.write)."""
    if thread_id is None:
        assert recipients is not None
        thread_id = await _retried_first(conn, sender, client_id)
    if thread_id is None:
        assert recipients is not None
        thread_id = await _open_thread(conn, ids, sender, recipients, title, now)
    members = await member_ids(conn, thread_id, sender)
    m = dm_messages.c
    previous = (
        await conn.execute(
            sa.select(m.message_id, m.seq, m.change_seq, m.created_unix_s).where(
                m.thread_id == thread_id, m.sender_id == sender, m.client_id == client_id
            )
        )
    ).first()
    deliver_to = await _deliverable(conn, sender, members)
    if previous is not None:
        return Sent(
            thread_id,
            int(previous.message_id),
            int(previous.seq),
            int(previous.change_seq),
            created=False,
            created_unix_s=float(previous.created_unix_s),
            deliver_to=deliver_to,
        )
    message_id = ids.next_id()
    # The numbers first (the same UPDATE reads the thread's kind); a refusal below rolls
    # them back with the rest.
    seq, change_seq, kind = await _next_change(conn, thread_id, message_id=message_id)
    if kind == "direct" and len(deliver_to) < len(members) - 1:
        raise Forbidden("you cannot message this account", code="blocked")
    await _check_content(conn, sender, content, now)
    await conn.execute(
        dm_messages.insert().values(
            message_id=message_id,
            thread_id=thread_id,
            seq=seq,
            change_seq=change_seq,
            sender_id=sender,
            client_id=client_id,
            kind=content.kind,
            text=content.text,
            media_id=content.media_id,
            post_id=content.post_id,
            story_id=content.story_id,
            created_unix_s=now,
            unsent_unix_s=None,
        )
    )
    # Every member's last message; and, in the same statement, replying accepts a request
    # and the sender has read what they answer.
    mem = dm_members.c
    is_sender = mem.user_id == sender
    await conn.execute(
        dm_members.update()
        .where(mem.thread_id == thread_id)
        .values(
            last_message_id=message_id,
            folder=sa.case((is_sender, INBOX), else_=mem.folder),
            accepted=sa.case((is_sender, sa.true()), else_=mem.accepted),
            last_read_seq=sa.case((is_sender, seq), else_=mem.last_read_seq),
        )
    )
    return Sent(
        thread_id,
        message_id,
        seq,
        change_seq,
        created=True,
        created_unix_s=now,
        deliver_to=deliver_to,
    )


async def _message(conn: AsyncConnection, thread_id: int, message_id: int, viewer: int) -> Any:
    members = await member_ids(conn, thread_id, viewer)
    row = (
        await conn.execute(
            sa.select(dm_messages).where(
                dm_messages.c.message_id == message_id, dm_messages.c.thread_id == thread_id
            )
        )
    ).first()
    if row is None or row.sender_id in await graph.blocked_between(conn, viewer, [row.sender_id]):
        raise NotVisible("no such message")
    return row, members


async def _touch(conn: AsyncConnection, thread_id: int, message_id: int) -> int:
    _, change_seq, _ = await _next_change(conn, thread_id, message_id=None)
    await conn.execute(
        dm_messages.update()
        .where(dm_messages.c.message_id == message_id)
        .values(change_seq=change_seq)
    )
    return change_seq


def check_emoji(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= EMOJI_CHARS_MAX or not value.strip():
        raise Invalid(f"emoji must be a string of 1 to {EMOJI_CHARS_MAX} characters")
    return value


async def react(
    db: Database, viewer: int, thread_id: int, message_id: int, *, emoji: str | None
) -> Changed:
    """Sets (emoji) or removes (None) the viewer's reaction to a message."""
    async with db.transaction(lock=LOCK) as conn:
        row, members = await _message(conn, thread_id, message_id, viewer)
        if row.unsent_unix_s is not None:
            raise NotVisible("no such message")
        r = dm_reactions.c
        await conn.execute(
            dm_reactions.delete().where(r.message_id == message_id, r.user_id == viewer)
        )
        if emoji is not None:
            await conn.execute(
                dm_reactions.insert().values(
                    message_id=message_id, user_id=viewer, emoji=emoji, created_unix_s=time.time()
                )
            )
        change_seq = await _touch(conn, thread_id, message_id)
        notify = await _deliverable(conn, viewer, members)
    return Changed(thread_id, message_id, change_seq, notify)


async def unsend(db: Database, viewer: int, thread_id: int, message_id: int) -> Changed:
    """Deletes the viewer's own message for everyone: its content is erased, its place stays."""
    async with db.transaction(lock=LOCK) as conn:
        row, members = await _message(conn, thread_id, message_id, viewer)
        if row.sender_id != viewer:
            raise Forbidden("only the sender can unsend a message", code="not_sender")
        if row.unsent_unix_s is None:
            await conn.execute(
                dm_messages.update()
                .where(dm_messages.c.message_id == message_id)
                .values(
                    unsent_unix_s=time.time(), text=None, media_id=None, post_id=None, story_id=None
                )
            )
            await conn.execute(dm_reactions.delete().where(dm_reactions.c.message_id == message_id))
        change_seq = await _touch(conn, thread_id, message_id)
        notify = await _deliverable(conn, viewer, members)
    return Changed(thread_id, message_id, change_seq, notify)


async def hide(db: Database, viewer: int, thread_id: int, message_id: int) -> None:
    """Delete for me: the viewer no longer sees the message; the others still do."""
    async with db.transaction(lock=LOCK) as conn:
        await _message(conn, thread_id, message_id, viewer)
        h = dm_hidden.c
        done = (
            await conn.execute(
                sa.select(h.message_id).where(h.user_id == viewer, h.message_id == message_id)
            )
        ).first()
        if done is None:
            await conn.execute(
                dm_hidden.insert().values(
                    user_id=viewer, message_id=message_id, created_unix_s=time.time()
                )
            )


async def mark_read(db: Database, viewer: int, thread_id: int, *, seq: int | None) -> Changed:
    """A read receipt: the viewer has read up to `seq` (default: the newest). It never moves
    back, and never past the thread's last message."""
    async with db.transaction(lock=LOCK) as conn:
        members = await member_ids(conn, thread_id, viewer)
        last = (
            await conn.execute(
                sa.select(dm_threads.c.last_seq, dm_threads.c.last_change_seq).where(
                    dm_threads.c.thread_id == thread_id
                )
            )
        ).one()
        upto = int(last.last_seq) if seq is None else min(seq, int(last.last_seq))
        mem = dm_members.c
        await conn.execute(
            dm_members.update()
            .where(mem.thread_id == thread_id, mem.user_id == viewer, mem.last_read_seq < upto)
            .values(last_read_seq=upto)
        )
        notify = await _deliverable(conn, viewer, members)
    return Changed(thread_id, None, upto, notify)


async def accept(db: Database, viewer: int, thread_id: int) -> None:
    """Moves a requested thread to the inbox."""
    async with db.transaction(lock=LOCK) as conn:
        await member_ids(conn, thread_id, viewer)
        mem = dm_members.c
        await conn.execute(
            dm_members.update()
            .where(mem.thread_id == thread_id, mem.user_id == viewer)
            .values(folder=INBOX, accepted=True)
        )
