"""What the Mastodon routes share (api/mastodon_routes.py, api/mastodon_lists.py,
api/mastodon_conversations.py): page sizes, the max_id / since_id / min_id window over a
newest-first fetch, the `Link` header, the visibility filter of a list of posts, the
Relationship answer, and the 422 of what pinhole cannot do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from api import mastodon_docs, params
from api.context import ApiContext
from api.errors import ApiError
from api.mastodon_oauth import base_url
from api.responses import json_body_response, json_list, json_response
from common import ids
from social import accounts, graph, posts
from social.errors import Invalid

# Mastodon's page sizes: 20 by default, at most 40 (80 for accounts).
PAGE_SIZE_DEFAULT: Final = 20
PAGE_SIZE_MAX: Final = 40
# A page "newer than" (since_id/min_id) is read newest first down to the bound, at most
# this many entries: a client that fell further behind gets the newest ones.
NEWER_ENTRIES_MAX: Final = 400


class Unprocessable(ApiError):
    """Input Mastodon would take that pinhole cannot (a text-only status, a poll)."""

    status = 422
    code = "unprocessable"


def limit_of(body: dict[str, Any], maximum: int = PAGE_SIZE_MAX) -> int:
    given = body.get("limit")
    if given is None or given == "":
        return PAGE_SIZE_DEFAULT
    value = params.decimal(str(given), "limit", minimum=1, maximum=1_000_000)
    return min(value, maximum)  # Mastodon clamps rather than refuses


def id_param(body: dict[str, Any], name: str) -> int | None:
    given = body.get(name)
    if given is None or given == "":
        return None
    try:
        return ids.parse(str(given))
    except ValueError:
        raise Invalid(f"{name} is not an id") from None


Fetch = Callable[[int | None, int], Awaitable[list[int]]]


async def window(fetch: Fetch, body: dict[str, Any], limit: int) -> list[int]:
    """Ids newest first within max_id / since_id / min_id, as Mastodon pages: max_id
    pages back, since_id gives the newest above it, min_id the ones just above it.
    `fetch(before, n)`: at most n ids strictly below `before` (None: the newest), newest
    first."""
    max_id = id_param(body, "max_id")
    since_id = id_param(body, "since_id")
    min_id = id_param(body, "min_id")
    if since_id is None and min_id is None:
        return await fetch(max_id, limit)
    lower = min_id if min_id is not None else since_id
    assert lower is not None
    got: list[int] = []
    before = max_id
    while len(got) < NEWER_ENTRIES_MAX:
        chunk = await fetch(before, PAGE_SIZE_MAX)
        newer = [i for i in chunk if i > lower]
        got += newer
        if len(newer) < len(chunk) or len(chunk) < PAGE_SIZE_MAX or not chunk:
            break
        if min_id is None and len(got) >= limit:
            break
        before = chunk[-1]
    return got[-limit:] if min_id is not None else got[:limit]


def paged(request: web.Request, items: list[Any], page_ids: list[int], limit: int) -> web.Response:
    """A JSON list with Mastodon's Link header: rel="next" (older) first, then "prev"."""
    return _linked(request, json_response(items), page_ids, limit)


def paged_json(
    request: web.Request, items: list[bytes], page_ids: list[int], limit: int
) -> web.Response:
    """`paged` of items already encoded as JSON."""
    return _linked(request, json_body_response(json_list(items)), page_ids, limit)


def _linked(
    request: web.Request, response: web.Response, page_ids: list[int], limit: int
) -> web.Response:
    if page_ids:
        url = base_url(request) + request.path
        kept = {k: v for k, v in request.query.items() if k not in ("max_id", "min_id", "since_id")}
        kept["limit"] = str(limit)
        older = urlencode(kept | {"max_id": str(page_ids[-1])})
        newer = urlencode(kept | {"min_id": str(page_ids[0])})
        response.headers["Link"] = f'<{url}?{older}>; rel="next", <{url}?{newer}>; rel="prev"'
    return response


async def visible_posts(ctx: ApiContext, viewer: int, post_ids: list[int]) -> list[int]:
    """The posts among `post_ids` the viewer may see now (live, or their own processing
    ones; the author visible to them), in the given order."""
    if not post_ids:
        return []
    async with ctx.db.snapshot() as conn:
        found = await posts.get_many(conn, post_ids)
        owners = await accounts.get_many(conn, {p.author_id for p in found.values()})
        seen = await graph.visible_authors(conn, viewer, owners)
    shown = (posts.PostStatus.LIVE, posts.PostStatus.PROCESSING)
    return [
        p
        for p in post_ids
        if p in found
        and found[p].author_id in seen
        and found[p].status in shown
        and (found[p].status == posts.PostStatus.LIVE or found[p].author_id == viewer)
    ]


async def relationship_response(ctx: ApiContext, viewer: int, other: int) -> web.Response:
    async with ctx.db.snapshot() as conn:
        rel = await graph.relationship(conn, viewer, other)
        back = await graph.relationship(conn, other, viewer)
    return web.json_response(mastodon_docs.relationship(other, rel, requested_by=back.requested))
