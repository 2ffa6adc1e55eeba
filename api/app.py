"""The public API as an aiohttp application (docs/api/media.md, /api/openapi.json).

`make_app(config, media, secret=...)` builds it; its cleanup context opens the media
database (migrated), the blob writer and the ingest path, and starts the tus sweeper;
`running_api` serves it for tests and `serve_forever` for `pinhole api serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from api import auth, media_routes, openapi, tus
from api.config import ApiConfig
from api.context import CONTEXT, ApiContext
from api.errors import error_middleware
from common.db import migrate, open_database
from common.ids import IdGenerator
from common.signals import stop_event
from directory.writer import BlobWriter
from transformer import schema
from transformer.config import MediaConfig
from transformer.ingest import Ingest

log = logging.getLogger("pinhole.api")


def make_app(config: ApiConfig, media: MediaConfig, *, secret: bytes) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.json_body_bytes_max
    )

    async def resources(app: web.Application) -> AsyncIterator[None]:
        token = await asyncio.to_thread(
            auth.load_or_make_dev_token, config.data_dir, config.dev_token
        )
        if not media.database_url:
            await asyncio.to_thread(media.data_dir.mkdir, parents=True, exist_ok=True)
        db = await open_database(media.database, schema=media.database_schema or None)
        try:
            await migrate(db, schema.COMPONENT, schema.MIGRATIONS)
            await tus.migrate_tables(db)
            async with BlobWriter(media.directory_url, secret=secret) as writer:
                ingest = Ingest(media, db, writer, IdGenerator(media.id_shard))
                app[CONTEXT] = ApiContext(config, media, db, writer, ingest, token)
                yield
        finally:
            await db.close()

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(tus.sweeper)
    app.add_routes(media_routes.routes)
    app.add_routes(tus.routes)
    app.router.add_get("/api/openapi.json", openapi.serve)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Liveness for `pinhole up` / `status`: the process serves and its database answers."""
    ctx = request.app[CONTEXT]
    async with ctx.db.snapshot() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return web.json_response({"ok": True, "uploads_inflight": ctx.uploads_inflight})


@contextlib.asynccontextmanager
async def running_api(
    config: ApiConfig, media: MediaConfig, *, secret: bytes
) -> AsyncIterator[tuple[web.Application, int]]:
    """Serves the API on config.host:config.port (0: a free port); yields (app, port)."""
    app = make_app(config, media, secret=secret)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        yield app, int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def serve_forever(
    config: ApiConfig, media: MediaConfig, *, secret: bytes, ready: asyncio.Event | None = None
) -> None:
    """Serves until SIGINT or SIGTERM."""
    with stop_event() as stop:
        async with running_api(config, media, secret=secret) as (_, port):
            print(f"api listening on http://{config.host}:{port}/api/v1", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("api stopping")
