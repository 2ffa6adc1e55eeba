"""Posts, likes, saves and comments (docs/api/social.md)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from api import params
from api.context import CONTEXT, RATE, ApiContext
from api.media_docs import iso
from api.realtime_routes import broker_of
from api.search_routes import SEARCH_CONFIG
from api.social_docs import post_documents
from common.photo import alt_key
from feed import jobs as feed_jobs
from feed.hotstore import timeline_key
from realtime import events
from social import accounts, interactions, posts, ratelimit
from social.interactions import Comment
from transformer import media_store

log = logging.getLogger("pinhole.api")
routes = web.RouteTableDef()


@routes.post("/api/v1/posts")
async def create_post(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    async with ctx.db.transaction(lock=posts.LOCK) as conn:
        rate = await ratelimit.take_post(conn, ctx.social, viewer)
        post = await posts.create(
            conn, ctx.ids, ctx.social, viewer, body, search=request.app[SEARCH_CONFIG]
        )
        await feed_jobs.enqueue(
            conn,
            ctx.ids,
            "publish",
            post_id=post.post_id,
            author_id=viewer,
            attempts_max=ctx.feed.config.attempts_max,
        )
    request[RATE] = rate
    await ctx.feed.posted(post.post_id, viewer)
    docs = await post_documents(ctx, viewer, [post.post_id])
    doc = docs[0]
    doc["permalink"] = f"/api/v1/posts/{post.post_id}"
    return web.json_response(doc, status=201, headers={"Location": doc["permalink"]})


@routes.get("/api/v1/posts/{post_id}")
async def get_post(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    post_id = params.path_id(request, "post_id", "post")
    async with ctx.db.snapshot() as conn:
        await posts.visible(conn, viewer, post_id)
    return web.json_response((await post_documents(ctx, viewer, [post_id]))[0])


@routes.delete("/api/v1/posts/{post_id}")
async def delete_post(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    post_id = params.path_id(request, "post_id", "post")
    await remove_post(ctx, viewer, post_id)
    return web.Response(status=204)


async def remove_post(ctx: ApiContext, viewer: int, post_id: int) -> None:
    """Deletes the viewer's own post (NotVisible for anyone else's): it leaves every feed
    and its needles go (the Mastodon API's DELETE /statuses/{id} shares it)."""
    async with ctx.db.transaction(lock=posts.LOCK) as conn:
        post = await posts.delete(conn, viewer, post_id)
        await feed_jobs.enqueue(
            conn,
            ctx.ids,
            "retract",
            post_id=post_id,
            author_id=viewer,
            attempts_max=ctx.feed.config.attempts_max,
        )
    ctx.feed.wake.set()
    await ctx.feed.hot.remove([timeline_key(viewer)], [(post_id, viewer)])
    for item in post.media:
        await _delete_needles(ctx, item.media_id)


async def _delete_needles(ctx: ApiContext, media_id: int) -> None:
    """Deletes a deleted post's media needles now, so its URLs answer 404. Should this fail,
    the media is already set to expire and the workers' expiry sweep deletes them."""
    got = await media_store.get(ctx.db, media_id)
    if got is None:
        return
    try:
        for var in got[1]:
            await ctx.writer.delete(var.volume_id, media_id, alt_key(var.rendition, var.fmt))
    except Exception as e:
        log.warning("media %s: needle deletes left to the expiry sweep: %s", media_id, e)
        return
    await media_store.mark_gone(ctx.db, media_id, status=media_store.MediaStatus.DELETED)


async def _toggle(request: web.Request, what: str, *, on: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    post_id = params.path_id(request, "post_id", "post")
    if what == "like":
        if on:
            await ctx.rate(request, "like", viewer)
            await interactions.like(ctx.db, ctx.ids, viewer, post_id)
            events.publish_committed(broker_of(request.app))  # at commit, before the reads
        else:
            await interactions.unlike(ctx.db, viewer, post_id)
    else:
        await interactions.save(ctx.db, viewer, post_id, saved=on)
    doc = (await post_documents(ctx, viewer, [post_id]))[0]
    return web.json_response(
        {
            "post_id": doc["post_id"],
            "like_count": doc["like_count"],
            "viewer_has_liked": doc["viewer_has_liked"],
            "viewer_has_saved": doc["viewer_has_saved"],
        }
    )


@routes.put("/api/v1/posts/{post_id}/like")
async def like(request: web.Request) -> web.Response:
    return await _toggle(request, "like", on=True)


@routes.delete("/api/v1/posts/{post_id}/like")
async def unlike(request: web.Request) -> web.Response:
    return await _toggle(request, "like", on=False)


@routes.put("/api/v1/posts/{post_id}/save")
async def save(request: web.Request) -> web.Response:
    return await _toggle(request, "save", on=True)


@routes.delete("/api/v1/posts/{post_id}/save")
async def unsave(request: web.Request) -> web.Response:
    return await _toggle(request, "save", on=False)


async def _comment_documents(ctx: ApiContext, rows: list[Comment]) -> list[dict[str, Any]]:
    async with ctx.db.snapshot() as conn:
        authors = await accounts.get_many(conn, {c.author_id for c in rows})
    return [
        {
            "comment_id": str(c.comment_id),
            "post_id": str(c.post_id),
            "parent_id": None if c.parent_id is None else str(c.parent_id),
            "author": {
                "user_id": str(c.author_id),
                "username": authors[c.author_id].username if c.author_id in authors else None,
            },
            "text": c.text,
            "reply_count": c.reply_count,
            "created_at": iso(c.created_unix_s),
        }
        for c in rows
    ]


@routes.post("/api/v1/posts/{post_id}/comments")
async def add_comment(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    post_id = params.path_id(request, "post_id", "post")
    body = await params.json_body(request)
    parent = body.get("parent_id")
    parent_id = None if parent is None else posts.parse_id(parent, "parent_id")
    await ctx.rate(request, "comment", viewer)
    row = await interactions.comment(
        ctx.db, ctx.ids, ctx.social, viewer, post_id, body.get("text"), parent_id=parent_id
    )
    events.publish_committed(broker_of(request.app))  # at commit, before the reads
    return web.json_response((await _comment_documents(ctx, [row]))[0], status=201)


@routes.get("/api/v1/posts/{post_id}/comments")
async def list_comments(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    post_id = params.path_id(request, "post_id", "post")
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    parent_id = params.id_cursor(request, "parent_id")
    shown, next_after = await interactions.comment_page(
        ctx.db,
        viewer,
        post_id,
        parent_id=parent_id,
        after=params.id_cursor(request),
        limit=size,
    )
    return web.json_response(
        params.page_document(
            await _comment_documents(ctx, shown),
            "comments",
            cursor=None if next_after is None else str(next_after),
        )
    )


@routes.delete("/api/v1/posts/{post_id}/comments/{comment_id}")
async def delete_comment(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    post_id = params.path_id(request, "post_id", "post")
    comment_id = params.path_id(request, "comment_id", "comment")
    await interactions.delete_comment(ctx.db, viewer, post_id, comment_id)
    return web.Response(status=204)
