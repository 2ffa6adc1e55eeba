"""Running a cache node: the node, its HTTP API on the lean server, the heartbeat to the
directory, signals and shutdown.

The heartbeat posts ``{node_id, role: "cache", url, failure_domain: "", free_bytes: 0,
volumes: []}`` to ``{directory_url}/heartbeat`` every ``heartbeat_interval_s`` (or the
``interval_s`` the directory answers) while ``directory_url`` is set. A directory that is
down or refuses is logged (once per outage) and retried at the next beat; the cache serves
regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from cache.config import CacheConfig
from cache.http_api import CacheHttpApi
from cache.node import CacheNode
from common.credentials import Credentials, Purpose
from common.json_logs import AccessLog
from common.leanhttp import HttpLimits, LeanHTTPServer
from common.leanhttp.client import HttpClientError, LeanHTTPClient
from common.signals import stop_event

__all__ = ["heartbeat_loop", "running_cache", "serve_forever"]

log = logging.getLogger("pinhole.cache")

# The directory's answer may set the interval; it is clamped to this range so a bad answer
# can neither flood the directory nor silence the node.
_INTERVAL_S_MIN = 0.05
_INTERVAL_S_MAX = 60.0


def http_limits(config: CacheConfig) -> HttpLimits:
    return HttpLimits(
        header_bytes_max=config.request_header_bytes_max,
        # Only DELETE and administration reach the cache with a body; none needs one.
        body_bytes_max=64 * 1024,
        keepalive_idle_s_max=config.keepalive_idle_s_max,
        connections_max=config.connections_max,
    )


def advertised_url(config: CacheConfig, port: int) -> str:
    return config.advertise_url or f"http://{config.host}:{port}"


@contextlib.asynccontextmanager
async def running_cache(
    config: CacheConfig, *, credentials: Credentials
) -> AsyncIterator[tuple[CacheNode, LeanHTTPServer]]:
    """Serves the cache (port 0 picks a free one: read ``server.port``), heartbeats while
    ``directory_url`` is set, and on exit stops the heartbeat, the server, running store
    reads and the client."""
    client = LeanHTTPClient(
        connections_per_origin_max=config.store_connections_max,
        response_bytes_max=config.response_bytes_max,
        connect_timeout_s=min(config.fetch_timeout_s, 2.0),
    )
    node = CacheNode(config, credentials=credentials, client=client)
    access_log = AccessLog("cache")
    api = CacheHttpApi(node, credentials=credentials, access_log=access_log)
    server = LeanHTTPServer(
        api.handle, limits=http_limits(config), fast=api.fast, name=f"cache {config.name}"
    )
    heartbeat: asyncio.Task[None] | None = None
    try:
        await server.start(config.host, config.port)
        if config.directory_url:
            url = advertised_url(config, server.port)
            node_id = config.node_id or f"cache-{config.host}:{server.port}"
            heartbeat = asyncio.get_running_loop().create_task(
                heartbeat_loop(client, config, credentials=credentials, node_id=node_id, url=url)
            )
        yield node, server
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await server.close(grace_s=5.0)
        await node.close()
        await client.close()
        access_log.close()


async def heartbeat_loop(
    client: LeanHTTPClient, config: CacheConfig, *, credentials: Credentials, node_id: str, url: str
) -> None:
    """Heartbeats forever (cancel to stop)."""
    target = config.directory_url.rstrip("/") + "/heartbeat"
    body = json.dumps(
        {
            "node_id": node_id,
            "role": "cache",
            "url": url,
            "failure_domain": "",
            "free_bytes": 0,
            "volumes": [],
        }
    ).encode()
    headers = (
        ("Authorization", credentials.header(Purpose.NODE)),
        ("Content-Type", "application/json"),
    )
    interval = config.heartbeat_interval_s
    failing = False
    while True:
        problem = ""
        try:
            resp = await client.request(
                "POST", target, headers=headers, body=body, timeout_s=max(interval, 1.0)
            )
        except HttpClientError as exc:
            problem = str(exc)
        else:
            if resp.status == 200:
                interval = _interval(resp.body, interval)
            else:
                problem = f"HTTP {resp.status}: {resp.body[:200].decode('utf-8', 'replace')}"
        if problem and not failing:
            log.warning("heartbeat to %s failing: %s", target, problem)
        elif not problem and failing:
            log.info("heartbeat to %s works again", target)
        failing = bool(problem)
        await asyncio.sleep(interval)


def _interval(body: bytes, current: float) -> float:
    try:
        value = json.loads(body).get("interval_s")
    except (ValueError, AttributeError):
        return current
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(max(float(value), _INTERVAL_S_MIN), _INTERVAL_S_MAX)
    return current


async def serve_forever(
    config: CacheConfig, *, credentials: Credentials, ready: asyncio.Event | None = None
) -> None:
    """Serves until SIGINT or SIGTERM."""
    with stop_event() as stop:
        async with running_cache(config, credentials=credentials) as (_, server):
            log.info("cache %s serving on http://%s:%d", config.name, config.host, server.port)
            print(
                f"cache {config.name} listening on http://{config.host}:{server.port}", flush=True
            )
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("cache %s stopping", config.name)
