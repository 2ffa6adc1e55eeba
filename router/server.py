"""Running a router: the lean HTTP server, the internal client, the directory view, signals.

`running_router(config, *, credentials)` is an async context manager yielding (api, server)
for tests and embedding; `serve_forever(config, *, credentials, ready=None)` serves until SIGINT or
SIGTERM (what `pinhole router serve` runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from common.credentials import Credentials
from common.json_logs import AccessLog
from common.leanhttp import HttpLimits, LeanHTTPServer
from common.leanhttp.client import LeanHTTPClient
from common.signals import stop_event
from router.config import RouterConfig
from router.http_api import RouterHttpApi
from router.lookup import Directory

log = logging.getLogger("pinhole.router")

SHUTDOWN_GRACE_S = 5.0


def http_limits(config: RouterConfig) -> HttpLimits:
    # Photo requests carry no body; a small cap keeps a stray upload from using memory.
    return HttpLimits(
        header_bytes_max=config.request_header_bytes_max,
        body_bytes_max=64 * 1024,
        keepalive_idle_s_max=config.keepalive_idle_s_max,
        connections_max=config.connections_max,
    )


@contextlib.asynccontextmanager
async def running_router(
    config: RouterConfig, *, credentials: Credentials
) -> AsyncIterator[tuple[RouterHttpApi, LeanHTTPServer]]:
    """Serves the router on config.host:config.port (0: a free port, see server.port);
    on exit stops taking requests, lets those in flight finish, closes connections."""
    client = LeanHTTPClient(
        connections_per_origin_max=config.connections_per_origin_max,
        response_bytes_max=config.photo_bytes_max,
    )
    directory = Directory(config, client, credentials=credentials)
    server: LeanHTTPServer | None = None
    api: RouterHttpApi | None = None
    access_log = AccessLog("router")
    try:
        await directory.start()
        api = RouterHttpApi(
            config, directory, client, credentials=credentials, access_log=access_log
        )
        server = LeanHTTPServer(api.handle, limits=http_limits(config), name="router")
        api.server = server
        await server.start(config.host, config.port)
        yield api, server
    finally:
        if server is not None:
            await server.close(grace_s=SHUTDOWN_GRACE_S)
        if api is not None:
            await api.close()
        await directory.close()
        await client.close()
        access_log.close()


async def serve_forever(
    config: RouterConfig, *, credentials: Credentials, ready: asyncio.Event | None = None
) -> None:
    """Serves until SIGINT or SIGTERM."""
    with stop_event() as stop:
        async with running_router(config, credentials=credentials) as (_, server):
            log.info("router serving on http://%s:%d", config.host, server.port)
            print(f"router listening on http://{config.host}:{server.port}", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("router stopping")
