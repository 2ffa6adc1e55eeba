"""Search, typeahead, hashtag pages and place pages (docs/api/search.md): thin handlers over
social/search.py; the Mastodon API's /api/v2/search shares the same service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from api import params
from api.context import CONTEXT
from api.errors import BadApiRequest
from api.social_docs import author_document, avatars, post_documents, user_document
from social import accounts, places
from social.search import Hit, PostPage, Search
from social.search_config import SearchConfig
from social.search_engines import KINDS
from social.search_schema import hashtag_counts

SEARCH: Final = web.AppKey("search", Search)
SEARCH_CONFIG: Final = web.AppKey("search_config", SearchConfig)
BOOLEANS: Final = {"true": True, "false": False}
routes = web.RouteTableDef()


def setup(app: web.Application, config: SearchConfig | None) -> None:
    """Adds the routes and the search service (after api.app's resources context)."""
    app[SEARCH_CONFIG] = config or SearchConfig()

    async def service(app: web.Application) -> AsyncIterator[None]:
        app[SEARCH] = Search(app[CONTEXT].db, app[SEARCH_CONFIG])
        yield

    app.cleanup_ctx.append(service)
    app.add_routes(routes)


def _flag(request: web.Request, name: str) -> bool:
    given = request.query.get(name, "false")
    if given not in BOOLEANS:
        raise BadApiRequest(f"{name} must be true or false")
    return BOOLEANS[given]


async def documents(
    request: web.Request, viewer: int, hits: list[Hit], *, compact: bool
) -> list[dict[str, Any]]:
    """The documents of one kind's hits, in rank order (rows gone meanwhile left out)."""
    ctx = request.app[CONTEXT]
    wanted = [h.entity_id for h in hits]
    if not hits:
        return []
    kind = hits[0].kind
    async with ctx.db.snapshot() as conn:
        if kind == "accounts":
            users = await accounts.get_many(conn, wanted)
        elif kind == "places":
            found = await places.get_many(conn, wanted)
        else:
            rows = await conn.execute(
                hashtag_counts.select().where(hashtag_counts.c.tag_id.in_(wanted))
            )
            tags = {r.tag_id: {"name": r.tag, "post_count": r.post_count} for r in rows}
    if kind == "places":
        return [places.place_document(found[i]) for i in wanted if i in found]
    if kind == "hashtags":
        return [tags[i] for i in wanted if i in tags]
    shown = [users[i] for i in wanted if i in users]
    pics = await avatars(ctx, shown)
    if compact:
        return [author_document(u, pics.get(u.user_id)) for u in shown]
    return [user_document(u, avatar=pics.get(u.user_id)) for u in shown]


@routes.get("/api/v1/search")
async def search(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    service, config = request.app[SEARCH], request.app[SEARCH_CONFIG]
    typeahead = _flag(request, "typeahead")
    kind = request.query.get("type")
    if kind is None and not typeahead:
        raise BadApiRequest("type is required (accounts, hashtags or places) unless typeahead")
    if kind is not None and kind not in KINDS:
        raise BadApiRequest("type must be accounts, hashtags or places")
    most = config.typeahead_results_max if typeahead else config.results_max
    limit = params.limit(request, default=min(config.results_default, most), maximum=most)
    query = request.query.get("q")
    if query is not None:
        params.text(query, "q")
    out: dict[str, Any] = {"q": query}
    kinds = (kind,) if kind else KINDS
    found = await service.find_kinds(viewer, query or "", kinds, limit=limit)
    for each in kinds:
        out[each] = await documents(request, viewer, found[each], compact=typeahead)
    return web.json_response(out)


async def _page(request: web.Request, page: PostPage, viewer: int) -> web.Response:
    ctx = request.app[CONTEXT]
    docs = await post_documents(ctx, viewer, page.post_ids)
    return web.json_response(params.page_document(docs, "posts", cursor=page.next_cursor))


def _cursor(request: web.Request) -> str | None:
    given = request.query.get("cursor")
    return params.text(given, "cursor") if given else None


def _page_limit(request: web.Request) -> int:
    config = request.app[SEARCH_CONFIG]
    return params.limit(request, default=config.page_posts_default, maximum=config.page_posts_max)


@routes.get("/api/v1/hashtags/{name}")
async def hashtag(request: web.Request) -> web.Response:
    await request.app[CONTEXT].user_id(request)
    tag, count = await request.app[SEARCH].hashtag(params.text(request.match_info["name"], "name"))
    return web.json_response({"name": tag, "post_count": count})


async def _hashtag_posts(request: web.Request, *, top: bool) -> web.Response:
    viewer = await request.app[CONTEXT].user_id(request)
    service = request.app[SEARCH]
    tag, _ = await service.hashtag(params.text(request.match_info["name"], "name"))
    page = await service.hashtag_posts(
        viewer, tag, top=top, cursor=_cursor(request), limit=_page_limit(request)
    )
    return await _page(request, page, viewer)


@routes.get("/api/v1/hashtags/{name}/top")
async def hashtag_top(request: web.Request) -> web.Response:
    return await _hashtag_posts(request, top=True)


@routes.get("/api/v1/hashtags/{name}/recent")
async def hashtag_recent(request: web.Request) -> web.Response:
    return await _hashtag_posts(request, top=False)


async def _place(request: web.Request) -> places.Place:
    place_id = params.path_id(request, "place_id", "place")
    async with request.app[CONTEXT].db.snapshot() as conn:
        return await places.require(conn, place_id)


@routes.get("/api/v1/places/{place_id}")
async def place(request: web.Request) -> web.Response:
    await request.app[CONTEXT].user_id(request)
    return web.json_response(places.place_document(await _place(request)))


async def _place_posts(request: web.Request, *, top: bool) -> web.Response:
    viewer = await request.app[CONTEXT].user_id(request)
    found = await _place(request)
    page = await request.app[SEARCH].place_posts(
        viewer,
        found.place_id,
        top=top,
        cursor=_cursor(request),
        limit=_page_limit(request),
    )
    return await _page(request, page, viewer)


@routes.get("/api/v1/places/{place_id}/top")
async def place_top(request: web.Request) -> web.Response:
    return await _place_posts(request, top=True)


@routes.get("/api/v1/places/{place_id}/recent")
async def place_recent(request: web.Request) -> web.Response:
    return await _place_posts(request, top=False)
