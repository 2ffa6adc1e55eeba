"""Mastodon's conversations over pinhole's direct-message threads (docs/api/mastodon.md):
`GET /api/v1/conversations` and `POST /api/v1/conversations/{id}/read`.

A conversation is a thread of the viewer's inbox folder (message requests not accepted yet
are not listed); its id is the thread id, `accounts` the other members (those on the other
side of a block with the viewer left out), `unread` whether any message from them is
unread. A message is not a post on pinhole, so `last_status` is a Status made from the
thread's last message the viewer sees (`status_of_message`): visibility `direct`, the
message's text as content, its photo as the one media attachment (a signed, expiring URL),
the members as mentions; it has no favourites, bookmarks or replies, and its id is the
message id (GET /api/v1/statuses/{id} does not find it)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import mastodon_docs, params
from api.context import CONTEXT, ApiContext
from api.mastodon_oauth import base_url, inputs, user_of
from api.mastodon_paging import limit_of, paged, window
from api.message_routes import media_of
from api.realtime_routes import broker_of
from realtime import events
from social import accounts, graph, messages, threads

routes = web.RouteTableDef()


def status_of_message(
    message: threads.Message,
    thread: threads.Thread,
    sender: dict[str, Any],
    mentioned: list[dict[str, Any]],
    media: dict[int, dict[str, Any]],
    *,
    base: str,
) -> dict[str, Any]:
    """The Status standing for a direct message (see the module docstring)."""
    text = "" if message.unsent or message.text is None else message.text
    doc = None if message.media_id is None else media.get(message.media_id)
    attachments = [] if doc is None else [mastodon_docs.media_attachment(doc, description=None)]
    return {
        "id": str(message.message_id),
        "uri": f"{base}/threads/{thread.thread_id}/messages/{message.message_id}",
        "url": None,
        "created_at": mastodon_docs.mastodon_time(message.created_unix_s),
        "account": sender,
        "content": mastodon_docs.content_html(text, base),
        "text": text,
        "visibility": "direct",
        "sensitive": False,
        "spoiler_text": "",
        "media_attachments": attachments,
        "application": None,
        "mentions": [
            {"id": a["id"], "username": a["username"], "acct": a["acct"], "url": a["url"]}
            for a in mentioned
        ],
        "tags": [],
        "emojis": [],
        "reblogs_count": 0,
        "favourites_count": 0,
        "replies_count": 0,
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "reblog": None,
        "poll": None,
        "card": None,
        "language": None,
        "edited_at": None,
        "favourited": False,
        "reblogged": False,
        "muted": False,
        "bookmarked": False,
        "pinned": False,
        "filtered": [],
    }


async def conversations_of(
    ctx: ApiContext, viewer: int, found: list[threads.Thread], base: str
) -> list[dict[str, Any]]:
    """Conversation entities of these threads, hydrated together (accounts, avatars and
    the last messages' media in one batch each)."""
    member_ids = {m.user_id for t in found for m in t.members}
    async with ctx.db.snapshot() as conn:
        users = await accounts.get_many(conn, member_ids)
        hidden = await graph.blocked_between(conn, viewer, member_ids)
    account_docs = {
        int(d["id"]): d for d in await mastodon_docs.accounts_of(ctx, list(users.values()), base)
    }
    media = await media_of(ctx, [t.last_message for t in found if t.last_message is not None])
    out = []
    for t in found:
        others = [
            account_docs[m.user_id]
            for m in t.members
            if m.user_id != viewer and m.user_id not in hidden and m.user_id in account_docs
        ]
        last = t.last_message
        sender = None if last is None else account_docs.get(last.sender_id)
        out.append(
            {
                "id": str(t.thread_id),
                "unread": t.unread > 0,
                "accounts": others,
                "last_status": (
                    None
                    if last is None or sender is None
                    else status_of_message(last, t, sender, others, media, base=base)
                ),
            }
        )
    return out


@routes.get("/api/v1/conversations")
@routes.get("/api/v1/conversations/")  # as Mastodon.py asks for it
async def conversations(request: web.Request) -> web.Response:
    """Your inbox's threads, newest activity first; the Link header's ids are the threads'
    last message ids (Mastodon's are last status ids)."""
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:statuses")
    body = await inputs(request)
    limit = limit_of(body)
    by_last: dict[int, threads.Thread] = {}

    async def fetch(before: int | None, n: int) -> list[int]:
        found = await threads.inbox(ctx.db, viewer, folder=messages.INBOX, before=before, limit=n)
        keyed = [(t.last_message_id, t) for t in found if t.last_message_id is not None]
        by_last.update(keyed)
        return [key for key, _ in keyed]

    page = await window(fetch, body, limit)
    docs = await conversations_of(ctx, viewer, [by_last[i] for i in page], base_url(request))
    return paged(request, docs, page, limit)


@routes.post("/api/v1/conversations/{conversation_id}/read")
async def read(request: web.Request) -> web.Response:
    """Marks the thread read up to its newest message (a read receipt the other members
    are told of over MQTT, as POST /api/v1/threads/{id}/read); the Conversation."""
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:conversations")
    thread_id = params.path_id(request, "conversation_id", "conversation")
    changed = await messages.mark_read(ctx.db, viewer, thread_id, seq=None)
    events.thread_event(
        broker_of(request.app), "read", thread_id=thread_id, actor_id=viewer,
        recipients=changed.notify, seq=changed.change_seq,
    )  # fmt: skip
    found = await threads.thread(ctx.db, viewer, thread_id)
    return web.json_response((await conversations_of(ctx, viewer, [found], base_url(request)))[0])
