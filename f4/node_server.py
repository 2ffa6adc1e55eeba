"""Running an f4 storage node: its disks, the lean HTTP server, signals.

`running_f4_node(blocks_root, nodes, *, credentials, host, port)` is an async context manager
yielding (api, server) for tests and embedding; `serve_forever(...)` serves until SIGINT or
SIGTERM (what `pinhole f4 node serve` runs). At start, before the first request, each served
node's directory is created when missing and the temporaries of uploads a killed process
left are removed (on the disk threads); on exit the uploads still open are aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

from common.credentials import Credentials
from common.json_logs import AccessLog
from common.leanhttp import HttpLimits, LeanHTTPServer
from common.signals import stop_event
from f4.node_disk import NodeDisks
from f4.node_http import UPLOAD_CHUNK_BYTES_MAX, NodeHttpApi

log = logging.getLogger("pinhole.f4.node")

SHUTDOWN_GRACE_S: Final = 5.0
DEFAULT_PORT: Final = 8800
CONNECTIONS_MAX: Final = 1024


def http_limits() -> HttpLimits:
    return HttpLimits(body_bytes_max=UPLOAD_CHUNK_BYTES_MAX, connections_max=CONNECTIONS_MAX)


@contextlib.asynccontextmanager
async def running_f4_node(
    blocks_root: Path,
    nodes: Sequence[str],
    *,
    credentials: Credentials,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[tuple[NodeHttpApi, LeanHTTPServer]]:
    """Serves `nodes` (directories under blocks_root) on host:port (0: a free port, see
    server.port); on exit stops taking requests, lets those in flight finish, aborts the
    uploads left open."""
    disks = NodeDisks(blocks_root, nodes)

    def prepare() -> int:
        disks.create_directories()
        return disks.clean_temporaries()

    removed = await asyncio.to_thread(prepare)
    if removed:
        log.info("removed %d temporary file(s) of unfinished uploads", removed)
    access_log = AccessLog("f4-node")
    api = NodeHttpApi(disks, credentials=credentials, access_log=access_log)
    server = LeanHTTPServer(
        api.handle,
        limits=http_limits(),
        head_hook=api.head_hook,
        body_limit=api.body_limit,
        name="f4 node",
    )
    try:
        await server.start(host, port)
        yield api, server
    finally:
        await server.close(grace_s=SHUTDOWN_GRACE_S)
        await asyncio.to_thread(api.close)
        await asyncio.to_thread(disks.close)
        access_log.close()


async def serve_forever(
    blocks_root: Path,
    nodes: Sequence[str],
    *,
    credentials: Credentials,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    ready: asyncio.Event | None = None,
) -> None:
    """Serves until SIGINT or SIGTERM."""
    with stop_event() as stop:
        async with running_f4_node(
            blocks_root, nodes, credentials=credentials, host=host, port=port
        ) as (_, server):
            log.info("f4 node serving %s on http://%s:%d", ", ".join(nodes), host, server.port)
            print(f"f4 node listening on http://{host}:{server.port}", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("f4 node stopping")
