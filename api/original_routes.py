"""GET /api/v1/media/{media_id}/original: the original upload, bytes as received, for its
owner only (docs/api/media.md).

No photo URL leads to an original: it has a cookie of its own that only the metadata
database knows, and the router serves rendition 0 only to a request with the internal read
credential. This route is the owner's way to it: the API checks the session, then streams
the original from the router with its read credential, never holding it whole.
"""

from __future__ import annotations

from typing import Final

import aiohttp
from aiohttp import web

from api.context import CONTEXT
from api.errors import ApiError, NoSuchResource
from api.params import path_id
from common import request_ids
from common.credentials import Purpose
from common.photo import EXTENSIONS, Format, content_type, photo_path
from transformer import media_store
from transformer import variants as v

CHUNK_BYTES: Final = 256 * 1024
# Reading an original from the router: connect, then the whole body (at most
# video_bytes_max) to a client that may be slow.
ROUTER_CONNECT_TIMEOUT_S: Final = 5.0
DOWNLOAD_TIMEOUT_S_MAX: Final = 3600.0

routes = web.RouteTableDef()


@routes.get("/api/v1/media/{media_id}/original")
async def original(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    viewer_id = await ctx.user_id(request)
    media_id = path_id(request, "media_id", "media")
    got = await media_store.get(ctx.db, media_id)
    # Someone else's media, or one that is gone, is simply not there (no existence leak).
    if got is None or got[0].owner_id != viewer_id or got[0].status in media_store.GONE:
        raise NoSuchResource("no such media")
    row, rows = got
    var = next((r for r in rows if r.rendition == v.ORIGINAL), None)
    if var is None:
        raise NoSuchResource("no such media")
    fmt = Format(var.fmt)
    url = ctx.media.router_url + photo_path(
        var.volume_id, media_id, row.original_cookie, v.ORIGINAL, fmt
    )
    headers = {
        "Authorization": ctx.credentials.header(Purpose.READ),
        "Via": "1.1 pinhole-api",  # not a user's view: keeps it out of the photo cache
    }
    timeout = aiohttp.ClientTimeout(
        total=DOWNLOAD_TIMEOUT_S_MAX, sock_connect=ROUTER_CONNECT_TIMEOUT_S
    )
    async with (
        aiohttp.ClientSession(timeout=timeout, trace_configs=[request_ids.trace_config()]) as http,
        http.get(url, headers=headers) as upstream,
    ):
        if upstream.status != 200:
            raise ApiError(
                "the original cannot be read right now; retry shortly",
                code="original_unavailable",
                status=503,
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": content_type(fmt),
                "Content-Disposition": f'attachment; filename="{media_id}.{EXTENSIONS[fmt]}"',
                "Cache-Control": "private, no-store",
            }
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
            await response.write(chunk)
        await response.write_eof()
    return response
