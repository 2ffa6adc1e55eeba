"""The home feed and notifications (docs/api/social.md)."""

from __future__ import annotations

from aiohttp import web

from api import params
from api.context import CONTEXT
from api.errors import BadApiRequest
from api.media_docs import iso
from api.responses import dumps, json_body_response, json_list
from api.social_docs import author_document, avatars, post_documents_json
from feed import cursor as feed_cursor
from feed.service import Hydrate
from social import accounts, notify, post_batch, posts

routes = web.RouteTableDef()


@routes.get("/api/v1/feed")
async def feed(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    size = params.limit(
        request,
        default=ctx.feed_config.page_size_default,
        maximum=ctx.feed_config.page_size_max,
    )
    mode = request.query.get("mode", "chronological")
    cursor = feed_cursor.decode(request.query.get("cursor"))
    if mode == "chronological":
        if cursor.anchor is not None:
            raise BadApiRequest("that cursor belongs to the ranked feed", code="bad_cursor")
        # On SQLite the page's posts are read in the feed's last filtering unit.
        hydrate: Hydrate | None = None
        if ctx.db.quick is not None:
            hydrate = lambda c, ids: post_batch.read_quick(c, viewer, ids)  # noqa: E731
        page = await ctx.feed.page(viewer, cursor, size, hydrate=hydrate)
    elif mode == "ranked":
        if cursor.before is not None:
            raise BadApiRequest("that cursor belongs to the chronological feed", code="bad_cursor")
        page = await ctx.feed.ranked(viewer, cursor, size)
    else:
        raise BadApiRequest("mode must be chronological or ranked")
    docs = await post_documents_json(ctx, viewer, [e[0] for e in page.entries], batch=page.hydrated)
    # The page spliced from its posts' JSON (api/responses.py); the same members in the
    # same order as the document {"posts", "next_cursor", "has_more"}.
    tail = dumps(
        {
            "next_cursor": None
            if page.next_cursor is None
            else feed_cursor.encode(page.next_cursor),
            "has_more": page.has_more,
        }
    )
    return json_body_response(b'{"posts":' + json_list(docs) + b"," + tail[1:])


_VERBS = {
    "like": "liked your post",
    "comment": "commented on your post",
    "mention": "mentioned you",
    "follow": "started following you",
    "follow_request": "asked to follow you",
}


@routes.get("/api/v1/notifications")
async def notifications(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    groups, unread = await notify.groups(
        ctx.db, viewer, before=params.id_cursor(request), limit=size + 1
    )
    shown = groups[:size]
    async with ctx.db.snapshot() as conn:
        actors = await accounts.get_many(conn, {a for g in shown for a in g.actor_ids})
    pics = await avatars(ctx, list(actors.values()))
    items = []
    for g in shown:
        named = [actors[a] for a in g.actor_ids if a in actors]
        others = g.actors_total - 1
        lead = named[0].username if named else "someone"
        text = (
            f"{lead} {_VERBS[g.kind]}"
            if others <= 0
            else (f"{lead} and {others} other{'s' if others > 1 else ''} {_VERBS[g.kind]}")
        )
        items.append(
            {
                "group_id": str(g.latest_id),
                "kind": g.kind,
                "post_id": None if g.post_id is None else str(g.post_id),
                "actors": [author_document(u, pics.get(u.user_id)) for u in named],
                "actors_total": g.actors_total,
                "unread": g.unread,
                "text": text,
                "latest_at": iso(g.latest_unix_s),
            }
        )
    more = len(groups) > size
    doc = params.page_document(
        items, "notifications", cursor=str(shown[-1].latest_id) if more else None
    )
    doc["unread_count"] = unread
    return web.json_response(doc)


@routes.post("/api/v1/notifications/read")
async def mark_read(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    up_to = body.get("up_to")
    if up_to is not None:
        up_to = posts.parse_id(up_to, "up_to")
    marked = await notify.mark_read(ctx.db, viewer, up_to=up_to)
    return web.json_response({"marked": marked})
