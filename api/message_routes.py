"""Direct messages (docs/api/messages.md): the inbox, a thread's catch-up, sending (with a
client id for idempotent retries), reactions, unsend, delete for me, read receipts,
accepting a request and typing. The rules are social/messages.py's and social/threads.py's;
each write commits before its wake-ups are published (api/realtime_routes.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import params
from api.context import CONTEXT, ApiContext
from api.media_docs import iso, media_document
from api.realtime_routes import broker_of
from common import ids
from realtime import events
from social import graph, messages, threads
from social.errors import Invalid
from transformer import media_store

routes = web.RouteTableDef()

SEQ_MAX = 2**31 - 1  # the sequence columns are 32-bit


def message_document(
    m: threads.Message, media: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """`media`: documents of the messages' media (signed, expiring URLs), by media id."""
    return {
        "message_id": str(m.message_id),
        "thread_id": str(m.thread_id),
        "seq": m.seq,
        "change_seq": m.change_seq,
        "sender_id": str(m.sender_id),
        "client_id": m.client_id,
        "kind": m.kind,
        "text": m.text,
        "media_id": None if m.media_id is None else str(m.media_id),
        "post_id": None if m.post_id is None else str(m.post_id),
        "story_id": None if m.story_id is None else str(m.story_id),
        "created_at": iso(m.created_unix_s),
        "unsent": m.unsent,
        "reactions": [{"user_id": str(u), "emoji": e} for u, e in m.reactions],
        "media": None if m.media_id is None else (media or {}).get(m.media_id),
    }


async def media_of(ctx: ApiContext, found: list[threads.Message]) -> dict[int, dict[str, Any]]:
    """The media of these messages, their URLs signed and expiring: a message's photo
    reaches the thread's members and no one holding only a public URL."""
    wanted = [m.media_id for m in found if m.media_id is not None]
    if not wanted:
        return {}
    async with ctx.db.snapshot() as conn:
        rows = await media_store.get_many(conn, wanted)
    urls = ctx.photo_urls.signed()
    out = {}
    for media_id, (row, variants) in rows.items():
        if row.status in media_store.GONE:
            continue
        doc = media_document(row, variants, urls=urls, owner=False)
        out[media_id] = doc
    return out


def thread_document(
    t: threads.Thread, viewer: int, media: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    mine = next(x for x in t.members if x.user_id == viewer)
    return {
        "thread_id": str(t.thread_id),
        "kind": t.kind,
        "title": t.title,
        "created_by": str(t.created_by),
        "folder": mine.folder,
        "accepted": mine.accepted,
        "last_seq": t.last_seq,
        "last_change_seq": t.last_change_seq,
        "unread_count": t.unread,
        "members": [
            {"user_id": str(x.user_id), "last_read_seq": x.last_read_seq} for x in t.members
        ],
        "last_message": (
            None if t.last_message is None else message_document(t.last_message, media)
        ),
    }


def _recipients(body: dict[str, Any]) -> list[int]:
    value = body.get("recipient_ids")
    if not isinstance(value, list) or not 1 <= len(value) < messages.GROUP_MEMBERS_MAX:
        raise Invalid(
            f"recipient_ids must be a list of 1 to {messages.GROUP_MEMBERS_MAX - 1} user ids"
        )
    out = []
    for v in value:
        if not isinstance(v, str):
            raise Invalid("recipient_ids must hold id strings")
        try:
            out.append(ids.parse(v))
        except ValueError:
            raise Invalid(f"recipient_ids holds a bad id: {v[:40]!r}") from None
    return out


async def _send(request: web.Request, thread_id: int | None) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    client_id = messages.check_client_id(body.get("client_id"))
    content = messages.content_of(body)
    recipients = _recipients(body) if thread_id is None else None
    title = messages.title_of(body) if thread_id is None else None
    await ctx.rate(request, "message", viewer)
    sent = await messages.send(
        ctx.db,
        ctx.ids,
        viewer,
        client_id=client_id,
        content=content,
        thread_id=thread_id,
        recipients=recipients,
        title=title,
    )
    # Committed: now (and only now) the wake-ups.
    if sent.created:
        events.message_sent(
            broker_of(request.app),
            thread_id=sent.thread_id,
            message_id=sent.message_id,
            seq=sent.seq,
            change_seq=sent.change_seq,
            sender_id=viewer,
            recipients=sent.deliver_to,
        )
    if sent.created:  # what was just committed; no second read
        doc = message_document(
            threads.Message(
                message_id=sent.message_id,
                thread_id=sent.thread_id,
                seq=sent.seq,
                change_seq=sent.change_seq,
                sender_id=viewer,
                client_id=client_id,
                kind=content.kind,
                text=content.text,
                media_id=content.media_id,
                post_id=content.post_id,
                story_id=content.story_id,
                created_unix_s=sent.created_unix_s,
                unsent=False,
                reactions=(),
            )
        )
    else:  # a retry: the message as stored (it may have changed since)
        doc = await _stored(ctx.db, viewer, sent)
    doc["created"] = sent.created
    return web.json_response(doc, status=201 if sent.created else 200)


async def _stored(db: Any, viewer: int, sent: messages.Sent) -> dict[str, Any]:
    changes = await threads.changes(
        db, viewer, sent.thread_id, after_seq=0, limit=1, message_id=sent.message_id
    )
    if changes.messages:
        return message_document(changes.messages[0])
    return {"message_id": str(sent.message_id), "thread_id": str(sent.thread_id)}


@routes.post("/api/v1/messages")
async def send_new(request: web.Request) -> web.Response:
    return await _send(request, None)


@routes.post("/api/v1/threads/{thread_id}/messages")
async def send_in_thread(request: web.Request) -> web.Response:
    return await _send(request, params.path_id(request, "thread_id", "thread"))


@routes.get("/api/v1/threads")
async def inbox(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    folder = request.query.get("folder", messages.INBOX)
    if folder not in messages.FOLDERS:
        raise Invalid(f"folder must be one of {', '.join(messages.FOLDERS)}")
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    found = await threads.inbox(
        ctx.db, viewer, folder=folder, before=params.id_cursor(request), limit=size
    )
    cursor = (
        str(found[-1].last_message_id)
        if len(found) == size and found[-1].last_message_id is not None
        else None
    )
    media = await media_of(ctx, [t.last_message for t in found if t.last_message is not None])
    return web.json_response(
        params.page_document(
            [thread_document(t, viewer, media) for t in found], "threads", cursor=cursor
        )
    )


@routes.get("/api/v1/threads/{thread_id}")
async def get_thread(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id = params.path_id(request, "thread_id", "thread")
    found = await threads.thread(ctx.db, viewer, thread_id)
    media = await media_of(ctx, [found.last_message] if found.last_message else [])
    return web.json_response(thread_document(found, viewer, media))


@routes.get("/api/v1/threads/{thread_id}/messages")
async def thread_messages(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id = params.path_id(request, "thread_id", "thread")
    given = request.query.get("after_seq", "0")
    after = params.decimal(given, "after_seq", maximum=SEQ_MAX)
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    changes = await threads.changes(ctx.db, viewer, thread_id, after_seq=after, limit=size)
    media = await media_of(ctx, changes.messages)
    return web.json_response(
        {
            "messages": [message_document(m, media) for m in changes.messages],
            "next_after_seq": changes.next_after_seq,
            "has_more": changes.has_more,
            "last_change_seq": changes.last_change_seq,
        }
    )


def _message_path(request: web.Request) -> tuple[int, int]:
    return (
        params.path_id(request, "thread_id", "thread"),
        params.path_id(request, "message_id", "message"),
    )


@routes.put("/api/v1/threads/{thread_id}/messages/{message_id}/reaction")
async def react(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id, message_id = _message_path(request)
    emoji = messages.check_emoji((await params.json_body(request)).get("emoji"))
    changed = await messages.react(ctx.db, viewer, thread_id, message_id, emoji=emoji)
    _publish_change(request, "reaction", viewer, changed)
    return web.json_response({"change_seq": changed.change_seq})


@routes.delete("/api/v1/threads/{thread_id}/messages/{message_id}/reaction")
async def unreact(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id, message_id = _message_path(request)
    changed = await messages.react(ctx.db, viewer, thread_id, message_id, emoji=None)
    _publish_change(request, "reaction", viewer, changed)
    return web.json_response({"change_seq": changed.change_seq})


@routes.delete("/api/v1/threads/{thread_id}/messages/{message_id}")
async def unsend(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id, message_id = _message_path(request)
    changed = await messages.unsend(ctx.db, viewer, thread_id, message_id)
    _publish_change(request, "unsend", viewer, changed)
    return web.json_response({"change_seq": changed.change_seq})


@routes.post("/api/v1/threads/{thread_id}/messages/{message_id}/hide")
async def hide(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id, message_id = _message_path(request)
    await messages.hide(ctx.db, viewer, thread_id, message_id)
    return web.Response(status=204)


@routes.post("/api/v1/threads/{thread_id}/read")
async def mark_read(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id = params.path_id(request, "thread_id", "thread")
    body = await params.json_body(request)
    seq = body.get("seq")
    if seq is not None and (
        isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= SEQ_MAX
    ):
        raise Invalid(f"seq must be an integer within 0..{SEQ_MAX}")
    changed = await messages.mark_read(ctx.db, viewer, thread_id, seq=seq)
    events.thread_event(
        broker_of(request.app), "read", thread_id=thread_id, actor_id=viewer,
        recipients=changed.notify, seq=changed.change_seq,
    )  # fmt: skip
    return web.json_response({"last_read_seq": changed.change_seq})


@routes.post("/api/v1/threads/{thread_id}/accept")
async def accept(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id = params.path_id(request, "thread_id", "thread")
    await messages.accept(ctx.db, viewer, thread_id)
    return web.Response(status=204)


@routes.post("/api/v1/threads/{thread_id}/typing")
async def typing(request: web.Request) -> web.Response:
    """Published to the other members, never stored."""
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    thread_id = params.path_id(request, "thread_id", "thread")
    async with ctx.db.snapshot() as conn:
        members = await messages.member_ids(conn, thread_id, viewer)
        blocked = await graph.blocked_between(conn, viewer, members)
    events.thread_event(
        broker_of(request.app), "typing", thread_id=thread_id, actor_id=viewer,
        recipients=tuple(m for m in members if m != viewer and m not in blocked),
        include_actor=False,
    )  # fmt: skip
    return web.Response(status=204)


def _publish_change(
    request: web.Request, kind: str, viewer: int, changed: messages.Changed
) -> None:
    events.thread_event(
        broker_of(request.app), kind, thread_id=changed.thread_id, actor_id=viewer,
        recipients=changed.notify, message_id=changed.message_id,
        change_seq=changed.change_seq,
    )  # fmt: skip
