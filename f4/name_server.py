"""Running the f4 name node: its HTTP API, the heartbeat to the directory, signals.

`running_name_node(config, *, credentials)` is an async context manager yielding
(node, server) for tests and embedding; `serve_forever` serves until SIGINT or SIGTERM
(what `pinhole f4 name serve` runs). The heartbeat registers the name node with the
directory as role "f4", listing the volumes it serves (mode "sealed": they never take a
write), so the directory can list it as their replica; it reuses the store's heartbeat
(same interval rules, same quiet logging while the directory is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from common.credentials import Credentials
from common.json_logs import AccessLog
from common.leanhttp import HttpLimits, LeanHTTPServer
from common.signals import stop_event
from f4.cell import Cell
from f4.config import F4Config
from f4.name_http import NameNodeHttpApi
from f4.name_node import NameNode
from store.heartbeat import Heartbeat

log = logging.getLogger("pinhole.f4")

SHUTDOWN_GRACE_S = 5.0
ROLE = "f4"


class _NameNodeBeat:
    """What the heartbeat reads of the name node (store.heartbeat.BeatingNode)."""

    def __init__(self, node: NameNode) -> None:
        self._node = node
        self.node_id = node.config.name_node_id
        self.failure_domain = "-/-/-"
        self.changed = asyncio.Event()

    def free_bytes(self) -> int:
        return 0  # the directory places no Haystack replica on it

    def volume_statistics(self) -> list[Any]:
        return []


class NameNodeHeartbeat(Heartbeat):
    def __init__(self, node: NameNode, **options: Any) -> None:
        super().__init__(_NameNodeBeat(node), **options)
        self._name_node = node

    def payload(self) -> dict[str, Any]:
        doc = super().payload()
        doc["role"] = ROLE
        doc["volumes"] = [
            {"volume_id": v, "mode": "sealed"} for v in sorted(self._name_node.rescan())
        ]
        return doc


@contextlib.asynccontextmanager
async def running_name_node(
    config: F4Config, *, credentials: Credentials, cell: Cell | None = None
) -> AsyncIterator[tuple[NameNode, LeanHTTPServer]]:
    node = NameNode(cell or Cell(config, credentials=credentials), credentials=credentials)
    heartbeat: NameNodeHeartbeat | None = None
    server: LeanHTTPServer | None = None

    def status() -> dict[str, Any]:
        doc = {"node_id": config.name_node_id, **node.statistics()}
        if heartbeat is not None:
            doc["heartbeat"] = asdict(heartbeat.statistics())
        return doc

    access_log = AccessLog("f4-name")
    api = NameNodeHttpApi(node, credentials=credentials, status=status, access_log=access_log)
    try:
        server = LeanHTTPServer(
            api.handle, limits=HttpLimits(body_bytes_max=64 * 1024), name="f4 name node"
        )
        await server.start(config.name_host, config.name_port)
        if config.directory_url:
            url = config.name_url or f"http://{config.name_host}:{server.port}"
            heartbeat = NameNodeHeartbeat(
                node,
                directory_url=config.directory_url,
                url=url.rstrip("/"),
                credentials=credentials,
                interval_s=config.heartbeat_s,
            )
            heartbeat.start()
        yield node, server
    finally:
        if heartbeat is not None:
            await heartbeat.stop()
        if server is not None:
            await server.close(grace_s=SHUTDOWN_GRACE_S)
        await node.aclose()
        access_log.close()


async def serve_forever(
    config: F4Config, *, credentials: Credentials, ready: asyncio.Event | None = None
) -> None:
    """Serves until SIGINT or SIGTERM."""
    with stop_event() as stop:
        async with running_name_node(config, credentials=credentials) as (node, server):
            log.info("f4 name node serving %d volumes", len(node.served()))
            print(f"f4 name node listening on http://{config.name_host}:{server.port}", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("f4 name node stopping")
