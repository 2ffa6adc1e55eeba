"""Stories (docs/api/stories.md): posting, the tray, an author's reel, one story, views and
the viewer list, replies (a DM quoting the story), the archive, close friends and
highlights. The rules are social/stories.py's, social/highlights.py's and
social/close_friends.py's; the tray and the views are feed/story_tray.py's and
feed/story_views.py's. Story media URLs are always signed and expiring, never public.

`install(app)` adds the routes and a cleanup context (after the API's resources): the
stories migrations, the story store (Redis when [feed] redis_url is set, else embedded),
the views flusher and the sweep (a leased loop, one process at a time)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from api import params
from api.context import CONTEXT, ApiContext
from api.media_docs import iso, media_document
from api.message_routes import message_document
from api.realtime_routes import broker_of
from api.social_docs import account_documents, author_documents
from common.db import migrate
from common.jobs import LeasedLoop
from feed import story_tray
from feed.story_journal import JOURNAL_NAME
from feed.story_store import StoryStore, open_story_store
from feed.story_views import ViewCounter
from realtime import events, topics
from social import (
    close_friends,
    highlights,
    messages,
    posts,
    stories,
    stories_schema,
    story_reads,
    story_sweep,
    story_views,
    threads,
)
from social.errors import Invalid, NotVisible
from transformer import media_store

routes = web.RouteTableDef()

SWEEP_LEASE_S: Final = 60.0


@dataclass
class StoryParts:
    store: StoryStore
    views: ViewCounter


STORIES: Final = web.AppKey("stories", StoryParts)


def story_document(
    s: stories.Story,
    media: dict[int, dict[str, Any]],
    *,
    seen: bool | None = None,
) -> dict[str, Any]:
    return {
        "story_id": str(s.story_id),
        "author_id": str(s.author_id),
        "media_type": s.media_type,
        "can_reply": s.can_reply,
        "audience": s.audience,
        "created_at": iso(s.created_unix_s),
        "expires_at": iso(s.expires_unix_s),
        "seen": seen,
        "media": media.get(s.media_id),
    }


async def media_docs(ctx: ApiContext, found: list[stories.Story]) -> dict[int, dict[str, Any]]:
    """The stories' media with signed, expiring URLs (every story is private content)."""
    wanted = [s.media_id for s in found]
    if not wanted:
        return {}
    async with ctx.db.snapshot() as conn:
        rows = await media_store.get_many(conn, wanted)
    urls = ctx.photo_urls.signed()
    return {
        media_id: media_document(row, variants, urls=urls, owner=False)
        for media_id, (row, variants) in rows.items()
        if row.status not in media_store.GONE
    }


async def _documents(
    ctx: ApiContext, parts: StoryParts, viewer: int, found: list[stories.Story]
) -> list[dict[str, Any]]:
    media = await media_docs(ctx, found)
    seen = await parts.store.seen(viewer, [s.story_id for s in found])
    return [
        story_document(s, media, seen=s.story_id in seen or s.author_id == viewer) for s in found
    ]


@routes.post("/api/v1/stories")
async def post_story(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    new = stories.new_story_of(await params.json_body(request))
    story = await stories.post(ctx.db, ctx.ids, ctx.social, viewer, new)
    # Committed: drop the followers' cached trays and wake them (their notifications topic).
    wake = await _story_wakeups(request, story)
    await story_tray.forget_followers(ctx.db, parts.store, viewer, each_batch=wake)
    media = await media_docs(ctx, [story])
    return web.json_response(story_document(story, media, seen=True), status=201)


async def _story_wakeups(
    request: web.Request, story: stories.Story
) -> Callable[[list[int]], None] | None:
    """A `story` event (QoS 1, a wake-up: the tray is the copy) for each follower who may
    see the story, on their notifications topic; None without a broker."""
    broker = broker_of(request.app)
    if broker is None:
        return None
    audience: set[int] | None = None
    if story.audience == stories.CLOSE_FRIENDS:
        listed = await close_friends.page(
            request.app[CONTEXT].db,
            story.author_id,
            after=None,
            limit=request.app[CONTEXT].social.close_friends_max,
        )
        audience = set(listed)
    body = topics.payload("story", story_id=story.story_id, author_id=story.author_id)

    def publish(followers: list[int]) -> None:
        for user in followers:
            if audience is None or user in audience:
                broker.publish(topics.notifications(user), body)

    return publish


@routes.get("/api/v1/stories/tray")
async def tray(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    found = await story_tray.read(ctx.db, parts.store, ctx.social, viewer)
    people = account_documents(ctx, found.accounts, found.pictures)
    return web.json_response(
        {
            "authors": [
                {
                    "user_id": str(a.user_id),
                    "username": a.username,
                    **people.get(a.user_id, {}),
                    "has_unseen": a.has_unseen,
                    "stories": [
                        {
                            "story_id": str(s.story_id),
                            "media_type": s.media_type,
                            "audience": s.audience,
                            "created_at": iso(s.created_unix_s),
                            "expires_at": iso(s.expires_unix_s),
                            "seen": s.seen,
                        }
                        for s in a.stories
                    ],
                }
                for a in found.authors
            ]
        }
    )


@routes.get("/api/v1/stories/archive")
async def archive(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    async with ctx.db.snapshot() as conn:
        found = await stories.archive(
            conn, viewer, now=time.time(), before=params.id_cursor(request), limit=size
        )
    cursor = str(found[-1].story_id) if len(found) == size else None
    docs = await _documents(ctx, parts, viewer, found)
    return web.json_response(params.page_document(docs, "stories", cursor=cursor))


@routes.get("/api/v1/users/{user_id}/stories")
async def user_stories(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    author = params.path_id(request, "user_id", "user")
    async with ctx.db.snapshot() as conn:
        found = await stories.reel(conn, viewer, author, now=time.time())
    return web.json_response({"stories": await _documents(ctx, parts, viewer, found)})


@routes.get("/api/v1/stories/{story_id}")
async def get_story(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    story_id = params.path_id(request, "story_id", "story")
    async with ctx.db.snapshot() as conn:
        story = await stories.visible(conn, viewer, story_id, now=time.time())
    return web.json_response((await _documents(ctx, parts, viewer, [story]))[0])


@routes.post("/api/v1/stories/{story_id}/seen")
async def seen(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    story_id = params.path_id(request, "story_id", "story")
    now = time.time()
    story = await story_reads.visible_live(ctx.db, viewer, story_id, now=now)
    first = False
    if story.author_id != viewer:  # an author's own views are not counted
        first = await parts.views.mark_seen(story, viewer, now=now)
    return web.json_response({"story_id": str(story_id), "first_view": first})


@routes.get("/api/v1/stories/{story_id}/viewers")
async def viewers(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    story_id = params.path_id(request, "story_id", "story")
    async with ctx.db.snapshot() as conn:
        story = (await stories.get_many(conn, [story_id])).get(story_id)
    if story is None or story.author_id != viewer:
        raise NotVisible("no such story")
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    recorded, page = await story_views.viewers(
        ctx.db, story_id, after=params.id_cursor(request), limit=size
    )
    held = (await parts.store.view_counts([story_id])).get(story_id)
    cursor = str(page[-1][0]) if len(page) == size else None
    people = await author_documents(ctx, viewer, [u for u, _ in page])
    doc = params.page_document(
        [{**people.get(u, {}), "user_id": str(u), "viewed_at": iso(at)} for u, at in page],
        "viewers",
        cursor=cursor,
    )
    doc["view_count"] = max(recorded, held or 0)
    return web.json_response(doc)


@routes.post("/api/v1/stories/{story_id}/replies")
async def reply(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    story_id = params.path_id(request, "story_id", "story")
    body = await params.json_body(request)
    client_id = messages.check_client_id(body.get("client_id"))
    content = messages.content_of(
        {"kind": "story_reply", "text": body.get("text"), "story_id": str(story_id)}
    )
    async with ctx.db.snapshot() as conn:
        story = await stories.visible(conn, viewer, story_id, now=time.time())
    stories.check_reply(story, viewer)
    await ctx.rate(request, "message", viewer)
    sent = await messages.send(
        ctx.db, ctx.ids, viewer, client_id=client_id, content=content, recipients=[story.author_id]
    )
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
            media_id=None,
            post_id=None,
            story_id=story_id,
            created_unix_s=sent.created_unix_s,
            unsent=False,
            reactions=(),
        )
    )
    doc["created"] = sent.created
    return web.json_response(doc, status=201 if sent.created else 200)


# -- close friends ---------------------------------------------------------------------------


@routes.get("/api/v1/close_friends")
async def list_close_friends(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    found = await close_friends.page(ctx.db, viewer, after=params.id_cursor(request), limit=size)
    cursor = str(found[-1]) if len(found) == size else None
    people = await author_documents(ctx, viewer, found)
    docs = [{**people.get(u, {}), "user_id": str(u)} for u in found]
    return web.json_response(params.page_document(docs, "users", cursor=cursor))


@routes.post("/api/v1/close_friends")
async def add_close_friend(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    friend = posts.parse_id(body.get("user_id"), "user_id")
    added = await close_friends.add(ctx.db, ctx.social, viewer, friend)
    await parts.store.drop_trays([friend])
    return web.json_response({"user_id": str(friend), "added": added}, status=201 if added else 200)


@routes.delete("/api/v1/close_friends/{user_id}")
async def remove_close_friend(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    friend = params.path_id(request, "user_id", "user")
    await close_friends.remove(ctx.db, viewer, friend)
    await parts.store.drop_trays([friend])
    return web.Response(status=204)


# -- highlights ------------------------------------------------------------------------------


async def highlight_document(
    ctx: ApiContext, parts: StoryParts, viewer: int, h: highlights.Highlight
) -> dict[str, Any]:
    return {
        "highlight_id": str(h.highlight_id),
        "owner_id": str(h.owner_id),
        "title": h.title,
        "created_at": iso(h.created_unix_s),
        "updated_at": iso(h.updated_unix_s),
        "stories": await _documents(ctx, parts, viewer, list(h.stories)),
    }


@routes.post("/api/v1/highlights")
async def create_highlight(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    title = highlights.title_of(body, ctx.social, required=True)
    story_ids = highlights.story_ids_of(body, ctx.social, required=True)
    assert title is not None and story_ids is not None
    highlight_id = await highlights.create(
        ctx.db, ctx.ids, ctx.social, viewer, title=title, story_ids=story_ids
    )
    found = await highlights.get(ctx.db, viewer, highlight_id)
    return web.json_response(await highlight_document(ctx, parts, viewer, found), status=201)


@routes.get("/api/v1/users/{user_id}/highlights")
async def user_highlights(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    owner = params.path_id(request, "user_id", "user")
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    found = await highlights.of_owner(
        ctx.db, viewer, owner, before=params.id_cursor(request), limit=size
    )
    cursor = str(found[-1].highlight_id) if len(found) == size else None
    docs = [await highlight_document(ctx, parts, viewer, h) for h in found]
    return web.json_response(params.page_document(docs, "highlights", cursor=cursor))


@routes.get("/api/v1/highlights/{highlight_id}")
async def get_highlight(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    highlight_id = params.path_id(request, "highlight_id", "highlight")
    found = await highlights.get(ctx.db, viewer, highlight_id)
    return web.json_response(await highlight_document(ctx, parts, viewer, found))


@routes.patch("/api/v1/highlights/{highlight_id}")
async def update_highlight(request: web.Request) -> web.Response:
    ctx, parts = request.app[CONTEXT], request.app[STORIES]
    viewer = await ctx.user_id(request)
    highlight_id = params.path_id(request, "highlight_id", "highlight")
    body = await params.json_body(request)
    title = highlights.title_of(body, ctx.social, required=False)
    story_ids = highlights.story_ids_of(body, ctx.social, required=False)
    if title is None and story_ids is None:
        raise Invalid("give a title or story_ids to change")
    await highlights.update(ctx.db, viewer, highlight_id, title=title, story_ids=story_ids)
    found = await highlights.get(ctx.db, viewer, highlight_id)
    return web.json_response(await highlight_document(ctx, parts, viewer, found))


@routes.delete("/api/v1/highlights/{highlight_id}")
async def delete_highlight(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    highlight_id = params.path_id(request, "highlight_id", "highlight")
    await highlights.delete(ctx.db, viewer, highlight_id)
    return web.Response(status=204)


# -- resources -------------------------------------------------------------------------------


async def _resources(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    await migrate(ctx.db, stories_schema.COMPONENT, stories_schema.MIGRATIONS)
    store = await open_story_store(
        ctx.feed_config.redis_url,
        prefix=ctx.feed_config.redis_prefix,
        journal_path=ctx.config.data_dir / JOURNAL_NAME,
    )
    parts = StoryParts(store, ViewCounter(ctx.db, store, ctx.social))
    app[STORIES] = parts

    async def drop_tray(follower: int) -> None:
        await store.drop_trays([follower])

    # A follow, an unfollow or a block (both ways) drops the follower's cached tray at
    # once, through whichever route made it (ours, Mastodon's, a request approved).
    stop_listening = ctx.feed.on_follower_changed(drop_tray)

    async def sweep_pass() -> None:
        await story_sweep.sweep_once(ctx.db, ctx.social, now=time.time())

    sweep = LeasedLoop(
        ctx.db,
        story_sweep.LEASE,
        sweep_pass,
        holder=f"{socket.gethostname()}:{os.getpid()}:{id(app)}",
        lease_s=SWEEP_LEASE_S,
        interval_s=ctx.social.story_sweep_interval_s,
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(parts.views.run(stop)), asyncio.create_task(sweep.run(stop))]
    try:
        yield
    finally:
        stop_listening()
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        await store.close()


def install(app: web.Application) -> None:
    """Adds the stories API to the API application (after its resources)."""
    app.add_routes(routes)
    app.cleanup_ctx.append(_resources)
