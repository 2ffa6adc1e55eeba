"""The Mastodon lists over pinhole's graph and interactions (docs/api/mastodon.md): follow
requests (list, authorize, reject), favourites (likes) and bookmarks (saves), each paged
with max_id / since_id / min_id and a `Link` header as Mastodon pages them.

`follow_requests` is also pinhole's own path (GET /api/v1/follow_requests): it is not in
`routes` but chosen by the token in api/mastodon_routes.py's middleware."""

from __future__ import annotations

from aiohttp import web

from api import mastodon_docs, params
from api.context import CONTEXT
from api.errors import NoSuchResource
from api.mastodon_oauth import base_url, inputs, user_of
from api.mastodon_paging import (
    limit_of,
    paged,
    relationship_response,
    visible_posts,
    window,
)
from social import accounts, graph, interactions
from social.errors import NotVisible

routes = web.RouteTableDef()


async def follow_requests(request: web.Request) -> web.Response:
    """GET /api/v1/follow_requests with an OAuth token: the Accounts asking to follow you,
    newest request first; the Link header's ids are request ids (as Mastodon's are)."""
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:follows")
    body = await inputs(request)
    limit = limit_of(body)
    requester_of: dict[int, int] = {}

    async def fetch(before: int | None, n: int) -> list[int]:
        found = await graph.pending_requests(ctx.db, viewer, before=before, limit=n)
        requester_of.update(found)
        return [request_id for request_id, _ in found]

    page = await window(fetch, body, limit)
    async with ctx.db.snapshot() as conn:
        users = await accounts.get_many(conn, {requester_of[r] for r in page})
    shown = [users[requester_of[r]] for r in page if requester_of[r] in users]
    docs = await mastodon_docs.accounts_of(ctx, shown, base_url(request))
    return paged(request, docs, page, limit)


async def _answer(request: web.Request, *, approve: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:follows")
    requester = params.path_id(request, "account_id", "account")
    try:
        await graph.answer_request(ctx.db, ctx.ids, viewer, requester, approve=approve)
    except NotVisible:
        raise NoSuchResource("Record not found") from None
    if approve:
        await ctx.feed.followed(requester, viewer)
    return await relationship_response(ctx, viewer, requester)


@routes.post("/api/v1/follow_requests/{account_id}/authorize")
async def authorize(request: web.Request) -> web.Response:
    """The requester now follows you; their Relationship (`followed_by` true)."""
    return await _answer(request, approve=True)


@routes.post("/api/v1/follow_requests/{account_id}/reject")
async def reject(request: web.Request) -> web.Response:
    """The request is gone; the requester's Relationship."""
    return await _answer(request, approve=False)


async def _statuses(request: web.Request, scope: str, *, saved: bool) -> web.Response:
    """Your liked (saved) posts you may still see as Statuses, newest post first; the
    Link header's ids are status ids. A page may hold fewer than `limit` statuses when some
    are hidden now (deleted, a block, a private account you left): follow rel="next"."""
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, scope)
    body = await inputs(request)
    limit = limit_of(body)

    async def fetch(before: int | None, n: int) -> list[int]:
        async with ctx.db.snapshot() as conn:
            return await interactions.liked_or_saved(
                conn, viewer, saved=saved, before=before, limit=n
            )

    page = await window(fetch, body, limit)
    shown = await visible_posts(ctx, viewer, page)
    docs = await mastodon_docs.statuses(ctx, viewer, shown, base_url(request))
    return paged(request, docs, page, limit)


@routes.get("/api/v1/favourites")
async def favourites(request: web.Request) -> web.Response:
    return await _statuses(request, "read:favourites", saved=False)


@routes.get("/api/v1/bookmarks")
async def bookmarks(request: web.Request) -> web.Response:
    return await _statuses(request, "read:bookmarks", saved=True)
