"""Running a store node: the node, its HTTP API on the lean server, signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence

from common.leanhttp import HttpLimits, LeanHTTPServer
from store.config import StoreConfig
from store.http_api import StoreHttpApi
from store.memory import tune_allocator
from store.node import StoreNode

log = logging.getLogger("pinhole.store")


def http_limits(config: StoreConfig) -> HttpLimits:
    return HttpLimits(
        header_bytes_max=config.request_header_bytes_max,
        body_bytes_max=config.volume.needle_data_bytes_max,
        keepalive_idle_s_max=config.keepalive_idle_s_max,
        connections_max=config.connections_max,
    )


@contextlib.asynccontextmanager
async def running_node(
    config: StoreConfig, *, secret: bytes, create_volumes: Sequence[int] = ()
) -> AsyncIterator[tuple[StoreNode, LeanHTTPServer]]:
    """Opens the node's volumes (creating the ones in `create_volumes` that are missing),
    serves its API, and on exit stops both cleanly (queued writes finish, a final index
    checkpoint per volume)."""
    node = StoreNode(config)
    await node.start()
    for vid in create_volumes:
        if vid not in node.volumes:
            await node.create_volume(vid)
    api = StoreHttpApi(node, secret=secret)
    server = LeanHTTPServer(
        api.handle,
        limits=http_limits(config),
        head_hook=api.head_hook,
        body_limit=api.body_limit,
        name=f"store {config.name}",
    )
    try:
        await server.start(config.host, config.port)
    except BaseException:
        await node.close()
        raise
    try:
        yield node, server
    finally:
        await server.close(grace_s=5.0)
        await node.close()


async def serve_forever(
    config: StoreConfig,
    *,
    secret: bytes,
    create_volumes: Sequence[int] = (),
    ready: asyncio.Event | None = None,
) -> None:
    """Serves until SIGINT or SIGTERM."""
    tune_allocator()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_node(config, secret=secret, create_volumes=create_volumes) as (
        node,
        server,
    ):
        log.info(
            "store node %s serving %d volumes on http://%s:%d",
            config.name,
            len(node.volumes),
            config.host,
            server.port,
        )
        print(
            f"store node {config.name} listening on http://{config.host}:{server.port}", flush=True
        )
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("store node %s stopping", config.name)
