"""Running a store node: the node, its HTTP API on the lean server, its heartbeat to the
directory (when `directory_url` is set), signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Sequence

from common.credentials import Credentials
from common.json_logs import AccessLog
from common.leanhttp import HttpLimits, LeanHTTPServer
from common.signals import stop_event
from store.config import StoreConfig
from store.heartbeat import Heartbeat
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
    config: StoreConfig, *, credentials: Credentials, create_volumes: Sequence[int] = ()
) -> AsyncIterator[tuple[StoreNode, LeanHTTPServer]]:
    """Opens the node's volumes (creating the ones in `create_volumes` that are missing),
    serves its API, starts the heartbeat when the node has a directory, and on exit stops
    all of it cleanly (heartbeat first, then the server; queued writes finish, a final index
    checkpoint per volume)."""
    node = StoreNode(config, credentials=credentials)
    await node.start()
    for vid in create_volumes:
        if vid not in node.volumes:
            await node.create_volume(vid)
    access_log = AccessLog("store") if config.access_log else None
    api = StoreHttpApi(node, credentials=credentials, access_log=access_log)
    server = LeanHTTPServer(
        api.handle,
        limits=http_limits(config),
        head_hook=api.head_hook,
        body_limit=api.body_limit,
        fast=api.fast,
        name=f"store {config.name}",
    )
    try:
        await server.start(config.host, config.port)
    except BaseException:
        await node.close()
        raise
    # With port 0 the name and URL take the port actually bound.
    node.node_id = config.node_id or f"{config.host}:{server.port}"
    if config.directory_url:
        node.heartbeat = Heartbeat(
            node,
            directory_url=config.directory_url,
            url=advertised_url(config, server.port),
            credentials=credentials,
            interval_s=config.heartbeat_interval_s,
        )
        node.heartbeat.start()
    try:
        yield node, server
    finally:
        if node.heartbeat is not None:
            await node.heartbeat.stop()
        await server.close(grace_s=5.0)
        await node.close()
        if access_log is not None:
            access_log.close()


def advertised_url(config: StoreConfig, port: int) -> str:
    """The URL the cluster reaches this node at: advertise_url, else http://host:port (a
    wildcard host is no address for others: the node's host name stands in for it)."""
    if config.advertise_url:
        return config.advertise_url.rstrip("/")
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve_forever(
    config: StoreConfig,
    *,
    credentials: Credentials,
    create_volumes: Sequence[int] = (),
    ready: asyncio.Event | None = None,
) -> None:
    """Serves until SIGINT or SIGTERM."""
    tune_allocator()
    with stop_event() as stop:
        async with running_node(config, credentials=credentials, create_volumes=create_volumes) as (
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
                f"store node {config.name} listening on http://{config.host}:{server.port}",
                flush=True,
            )
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("store node %s stopping", config.name)
