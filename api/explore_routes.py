"""Explore (docs/api/explore.md): a thin handler over social/explore.py, and the refresh
job (a `LeasedLoop`, one process at a time) in the API's cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from api import params
from api.context import CONTEXT
from api.social_docs import post_documents
from common.db import migrate
from common.jobs import LeasedLoop
from social import explore, explore_schema
from social.explore_config import ExploreConfig

EXPLORE_CONFIG: Final = web.AppKey("explore_config", ExploreConfig)
REFRESH_LEASE_S: Final = 60.0
routes = web.RouteTableDef()


def setup(app: web.Application, config: ExploreConfig | None) -> None:
    """Adds the route and the refresh job (after api.app's resources context)."""
    app[EXPLORE_CONFIG] = config or ExploreConfig()
    app.cleanup_ctx.append(_resources)
    app.add_routes(routes)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    ctx, config = app[CONTEXT], app[EXPLORE_CONFIG]
    await migrate(ctx.db, explore_schema.COMPONENT, explore_schema.MIGRATIONS)

    async def refresh_pass() -> None:
        await explore.refresh_once(ctx.db, config, now=time.time())

    loop = LeasedLoop(
        ctx.db,
        explore.LEASE,
        refresh_pass,
        holder=f"{socket.gethostname()}:{os.getpid()}:{id(app)}",
        lease_s=REFRESH_LEASE_S,
        interval_s=config.refresh_interval_s,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task


@routes.get("/api/v1/explore")
async def explore_page(request: web.Request) -> web.Response:
    ctx, config = request.app[CONTEXT], request.app[EXPLORE_CONFIG]
    viewer = await ctx.user_id(request)
    limit = params.limit(request, default=config.page_posts_default, maximum=config.page_posts_max)
    given = request.query.get("cursor")
    cursor = params.text(given, "cursor") if given else None
    found = await explore.page(ctx.db, config, viewer, cursor=cursor, limit=limit, now=time.time())
    docs = await post_documents(ctx, viewer, found.post_ids)
    return web.json_response(params.page_document(docs, "posts", cursor=found.next_cursor))
