"""Running the directory: database, migrations, background loops, HTTP API, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from common.credentials import Credentials
from common.db import migrate, open_database
from common.jobs import Clock
from common.json_logs import AccessLog
from common.signals import stop_event
from directory import schema
from directory.config import DirectoryConfig
from directory.http_api import make_app
from directory.service import Directory

log = logging.getLogger("pinhole.directory")


@contextlib.asynccontextmanager
async def running_directory(
    config: DirectoryConfig,
    *,
    credentials: Credentials,
    loops: bool = True,
    clock: Clock | None = None,
) -> AsyncIterator[tuple[Directory, int]]:
    """Opens (and migrates) the database, starts the loops (unless `loops` is false: for
    tests of the handlers alone) and serves the API; yields (directory, port). On exit the
    loops stop, their leases are released and the database is closed. `clock` (the system
    clock by default) is where the directory reads the time: tests pass a ManualClock."""
    if not config.database_url:
        await asyncio.to_thread(config.data_dir.mkdir, parents=True, exist_ok=True)
    db = await open_database(config.database, schema=config.database_schema or None)
    try:
        await migrate(db, schema.COMPONENT, schema.MIGRATIONS)
        directory = Directory(config, db, credentials=credentials, clock=clock)
        await directory.start(loops=loops)
        try:
            access_log = AccessLog("directory")
            runner = web.AppRunner(make_app(directory, access_log=access_log), access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, config.host, config.port)
                await site.start()
                port = int(runner.addresses[0][1])
                yield directory, port
            finally:
                await runner.cleanup()
                access_log.close()
        finally:
            await directory.close()
    finally:
        await db.close()


async def serve_forever(
    config: DirectoryConfig, *, credentials: Credentials, ready: asyncio.Event | None = None
) -> None:
    """Serves until SIGINT or SIGTERM."""
    with stop_event() as stop:
        async with running_directory(config, credentials=credentials) as (_, port):
            log.info("directory serving on http://%s:%d (%s)", config.host, port, config.placement)
            print(f"directory listening on http://{config.host}:{port}", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("directory stopping")
