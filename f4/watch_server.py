"""Running the f4 watcher (f4/watch.py) as a service: its loop and a small HTTP API
(docs/api/f4-watch.md).

    GET /healthz (open)   GET /status [admin]   GET /metrics [metrics or admin]

/status is `WatchService.status()`: the tick counter, the last tick (nodes up, waiting and
lost, the lost blocks), scrub passes and the jobs it queued and ran; /metrics the same
counters for Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.credentials import Credentials, Purpose
from common.errors import PinholeError
from common.jobs.metrics import DepthCollector
from common.json_logs import AccessLog
from common.leanhttp import (
    HttpLimits,
    LeanHTTPServer,
    Request,
    Response,
    error_response,
    guarded,
    json_response,
)
from common.leanhttp.observe import observed
from common.request_metrics import RequestMetrics, RequestObserver
from common.signals import stop_event
from f4.jobs import QUEUE as F4_QUEUE
from f4.watch import Counters, WatchService

log = logging.getLogger("pinhole.f4.watch")

SHUTDOWN_GRACE_S = 5.0

_COUNTER_DOCS = {
    "ticks": "Ticks completed (storage nodes' listings checked against the indexes)",
    "scrub_passes": "Scrub passes completed (every block read against its sidecar)",
    "scrub_bytes": "Block bytes read by scrub passes",
    "blocks_lost_seen": "Lost blocks seen by ticks (once per tick)",
    "blocks_corrupt_seen": "Blocks found failing their sidecar by scrub passes",
    "index_copies_lost_seen": "Missing or stale index copies seen by ticks (once per tick)",
    "rebuilds_queued": "Rebuild jobs queued by the watcher",
    "rebalances_queued": "Rebalance jobs queued by the watcher",
    "job_runs": "Times the watcher took the cell's lock and ran the due jobs",
    "jobs_run": "f4 jobs run by the watcher",
    "lock_busy": "Times due jobs or stale files were left to another holder of the cell's lock",
    "stale_files_deleted": "Stale blocks, sidecars and index copies deleted (f4/stale.py)",
    "stale_bytes_deleted": "Bytes of the stale files deleted",
    "stale_deletes_refused": "Stale files past the grace kept: their placed copy was not healthy",
    "errors": "Ticks and scrub passes that failed",
}
assert set(_COUNTER_DOCS) == set(Counters.__dataclass_fields__)


class _Collector:
    def __init__(self, service: WatchService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        counters = self._service.counters
        for name, doc in _COUNTER_DOCS.items():
            c = CounterMetricFamily(f"pinhole_f4_watch_{name}", doc)
            c.add_metric([], getattr(counters, name))
            yield c
        last = self._service.last
        if last is not None:
            for name, value, doc in (
                ("nodes_up", last.nodes_up, "Storage nodes that answered the last tick"),
                ("nodes_waiting", len(last.nodes_waiting), "Nodes down, within the grace"),
                ("nodes_lost", len(last.nodes_lost), "Nodes down longer than the grace"),
                ("blocks_lost", len(last.lost), "Blocks lost at the last tick"),
                ("blocks", last.blocks, "Blocks of the written volumes"),
                (
                    "last_tick_timestamp_seconds",
                    last.unix_s,
                    "When the last tick looked (Unix time)",
                ),
            ):
                g = GaugeMetricFamily(f"pinhole_f4_watch_{name}", doc)
                g.add_metric([], value)
                yield g
            files = GaugeMetricFamily(
                "pinhole_f4_watch_stale_files",
                "Stale files (no committed index generation places them there) per node",
                labels=["node"],
            )
            nbytes = GaugeMetricFamily(
                "pinhole_f4_watch_stale_bytes", "Bytes of the stale files per node", labels=["node"]
            )
            for node, row in last.stale_nodes.items():
                files.add_metric([node], row["files"])
                nbytes.add_metric([node], row["bytes"])
            yield files
            yield nbytes


async def render(
    service: WatchService, requests: RequestMetrics | None = None
) -> tuple[bytes, str]:
    """The watcher's counters and the f4 queue's depth per kind (migrate, rebuild,
    rebalance: how much repair work waits and how long it has waited)."""
    depths = await service.jobs.depths([F4_QUEUE])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(service))
    registry.register(DepthCollector(depths))
    if requests is not None:
        registry.register(requests)
    return generate_latest(registry), CONTENT_TYPE_LATEST


_UNAUTHORIZED = error_response(401, "unauthorized", "a valid internal credential is required")


def _error_for(exc: BaseException) -> Response:
    if isinstance(exc, PinholeError):
        body = {"error": {"code": exc.code, "message": exc.message or str(exc)}}
        return json_response(exc.status, body)
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal", "internal server error")


_ROUTES: Final = frozenset(("/healthz", "/status", "/metrics"))


def _route_of(req: Request) -> str:
    return req.path if req.path in _ROUTES else "unmatched"


class WatchHttpApi:
    def __init__(
        self,
        service: WatchService,
        *,
        credentials: Credentials,
        access_log: AccessLog | None = None,
    ) -> None:
        self._service = service
        self._credentials = credentials
        self.requests = RequestMetrics("pinhole_f4_watch")
        self.handle = observed(
            guarded(self._route, _error_for), RequestObserver(self.requests, access_log), _route_of
        )

    async def _metrics(self) -> Response:
        body, content_type = await render(self._service, self.requests)
        return Response(200, body, (), content_type)

    def _route(self, req: Request) -> Response | Awaitable[Response]:
        if req.method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", f"{req.method} is not allowed here")
        auth = req.headers.get("authorization")
        if req.path == "/healthz":
            return json_response(200, {"ok": True, "ticks": self._service.counters.ticks})
        if req.path == "/status":
            if not self._credentials.allows(auth, Purpose.ADMIN):
                return _UNAUTHORIZED
            return json_response(200, self._service.status())
        if req.path == "/metrics":
            if not self._credentials.allows(auth, Purpose.METRICS, Purpose.ADMIN):
                return _UNAUTHORIZED
            return self._metrics()
        return error_response(404, "not_found", f"no route for {req.method} {req.path}")


@contextlib.asynccontextmanager
async def running_watcher(
    service: WatchService, *, credentials: Credentials, host: str, port: int
) -> AsyncIterator[LeanHTTPServer]:
    """The watcher's loop and HTTP API, both stopped on exit."""
    access_log = AccessLog("f4-watch")
    api = WatchHttpApi(service, credentials=credentials, access_log=access_log)
    server = LeanHTTPServer(api.handle, limits=HttpLimits(body_bytes_max=4096), name="f4 watch")
    await server.start(host, port)
    try:
        async with service.running():
            yield server
    finally:
        await server.close(grace_s=SHUTDOWN_GRACE_S)
        access_log.close()


async def serve_forever(
    service: WatchService, *, credentials: Credentials, host: str, port: int
) -> None:
    """Serves until SIGINT or SIGTERM."""
    with stop_event() as stop:
        async with running_watcher(service, credentials=credentials, host=host, port=port) as srv:
            print(f"f4 watch listening on http://{host}:{srv.port}", flush=True)
            await stop.wait()
            log.info("f4 watcher stopping")
    await asyncio.sleep(0)
