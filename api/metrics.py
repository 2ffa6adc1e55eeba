"""The API's /metrics (metrics or admin credential): its requests per route template, the
job queues of the metadata database (every queue this process knows), the feed's fan-out
and the real-time side's MQTT publishes, all read at scrape time from counters kept anyway.

    pinhole_api_requests_total{method, route, code}, pinhole_api_request_duration_seconds
    pinhole_jobs_queued{queue, kind}, pinhole_jobs_running{queue, kind},
    pinhole_jobs_oldest_queued_age_seconds{queue, kind}   (common/jobs/queue.py depths)
    pinhole_feed_fanout_lag_seconds           age of the oldest fan-out job still queued
    pinhole_feed_fanout_jobs_total{outcome}   fan-out jobs this process ran (done, failed)
    pinhole_realtime_mqtt_publishes_total, pinhole_realtime_mqtt_publish_failures_total,
    pinhole_realtime_broker_connected, pinhole_realtime_typing_relayed_total,
    pinhole_realtime_typing_dropped_total

With [api] processes = N > 1 a scrape reaches one of the N processes (SO_REUSEPORT), so the
one it reaches answers for all: its own per-process families and those of the others,
each process's series labelled `process` ("0" .. "N-1"), and the families read from the
metadata database once (job depths, fan-out lag). The others' families come over the Unix
socket each process listens on (`ApiConfig.metrics_socket`: <data_dir>/metrics-<i>.sock,
as private as the data dir; the same metrics or admin credential is asked there too),
fetched at once with `SIBLING_TIMEOUT_S` each; `pinhole_api_process_scraped{process}` is 1 for a
process whose families are in the answer and 0 for one that did not answer in time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from api.config import ApiConfig
from api.context import CONTEXT
from api.errors import NotAuthenticated
from api.realtime_routes import broker_of
from common.credentials import Purpose
from common.jobs import JobStore, QueueDepth
from common.jobs.metrics import DepthCollector
from common.request_metrics import RequestMetrics
from feed import jobs as feed_jobs
from feed.runner import FanoutRunner

__all__ = [
    "API_CONFIG",
    "FANOUT",
    "PROCESS_INDEX",
    "REQUESTS",
    "metrics",
    "process_metrics_app",
]

log = logging.getLogger("pinhole.api")

REQUESTS: Final = web.AppKey("requests", RequestMetrics)
FANOUT: Final = web.AppKey("fanout", FanoutRunner)
# Which of the [api] processes serving the port this one is (0 when it is the only one).
PROCESS_INDEX: Final = web.AppKey("process_index", int)
API_CONFIG: Final = web.AppKey("api_config", ApiConfig)
# In the Unix socket's small app: the API's own app.
MAIN_APP: Final = web.AppKey("main_app", web.Application)


# How long a scrape waits for another API process's families.
SIBLING_TIMEOUT_S: Final = 2.0
# The route of a process's own families on its Unix socket.
PROCESS_METRICS_PATH: Final = "/metrics/process"


class _DatabaseCollector:
    """The families read from the metadata database: the same whichever process answers."""

    def __init__(self, depths: list[QueueDepth]) -> None:
        self._depths = depths

    def collect(self) -> Iterator[Metric]:
        feed = [d.oldest_queued_age_s for d in self._depths if d.queue == feed_jobs.QUEUE]
        yield GaugeMetricFamily(
            "pinhole_feed_fanout_lag_seconds",
            "Age of the oldest fan-out job still queued: how far timelines trail new posts",
            value=max(feed, default=0.0),
        )
        yield from DepthCollector(self._depths).collect()


class _ProcessCollector:
    """This process's own counters and state."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        yield from self._app[REQUESTS].collect()
        runner = self._app.get(FANOUT)
        c = CounterMetricFamily(
            "pinhole_feed_fanout_jobs", "Fan-out jobs run by this process", labels=["outcome"]
        )
        c.add_metric(["done"], runner.ran if runner is not None else 0)
        c.add_metric(["failed"], runner.failed if runner is not None else 0)
        yield c
        broker = broker_of(self._app)
        st = broker.statistics() if broker is not None else None
        yield GaugeMetricFamily(
            "pinhole_realtime_broker_connected",
            "1 while the API's MQTT connection is up (0 also when real-time push is off)",
            value=1.0 if st is not None and st.connected else 0.0,
        )
        for name, doc, value in (
            (
                "pinhole_realtime_mqtt_publishes",
                "MQTT publishes queued to the broker (QoS 1 wake-ups)",
                st.published if st else 0,
            ),
            (
                "pinhole_realtime_mqtt_publish_failures",
                "MQTT publishes dropped: client closed or its queue full",
                st.dropped if st else 0,
            ),
            (
                "pinhole_realtime_typing_relayed",
                "Typing events relayed from the broker",
                st.typing_relayed if st else 0,
            ),
            (
                "pinhole_realtime_typing_dropped",
                "Typing events dropped (relay queue full)",
                st.typing_dropped if st else 0,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class _Families:
    """Families already made, for a registry."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _labelled(families: Iterable[Metric], process: str) -> Iterator[Metric]:
    """The families with `process` added to every sample's labels."""
    for family in families:
        out = Metric(family.name, family.documentation, family.type, family.unit)
        out.samples = [s._replace(labels={**s.labels, "process": process}) for s in family.samples]
        yield out


def _merged(families: Iterable[Metric]) -> list[Metric]:
    """One family per name, the samples of every process's family of that name in it."""
    by_name: dict[str, Metric] = {}
    for family in families:
        kept = by_name.get(family.name)
        if kept is None:
            kept = by_name[family.name] = Metric(
                family.name, family.documentation, family.type, family.unit
            )
        kept.samples.extend(family.samples)
    return list(by_name.values())


def _allowed(request: web.Request) -> str:
    """The request's Authorization, when it carries a metrics or admin credential."""
    ctx = request.app[CONTEXT]
    auth = request.headers.get("Authorization", "")
    if not ctx.credentials.allows(auth, Purpose.METRICS, Purpose.ADMIN):
        raise NotAuthenticated("a metrics or admin internal credential is required")
    return auth


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text (metrics or admin credential)."""
    app = request.app
    auth = _allowed(request)
    depths = await JobStore(app[CONTEXT].db).depths()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DatabaseCollector(depths))
    config = app[API_CONFIG]
    if config.processes == 1:
        registry.register(_ProcessCollector(app))
    else:
        index = app[PROCESS_INDEX]
        own = list(_labelled(_ProcessCollector(app).collect(), str(index)))
        others = await asyncio.gather(
            *(_sibling(app, i, auth) for i in range(config.processes) if i != index)
        )
        scraped = GaugeMetricFamily(
            "pinhole_api_process_scraped",
            "1 when the API process's own families are in this answer, 0 when it did not"
            " answer in time",
            labels=["process"],
        )
        scraped.add_metric([str(index)], 1.0)
        families = own
        for i, got in others:
            scraped.add_metric([str(i)], 0.0 if got is None else 1.0)
            families += got or []
        registry.register(_Families([*_merged(families), scraped]))
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _sibling(app: web.Application, index: int, auth: str) -> tuple[int, list[Metric] | None]:
    """(index, API process `index`'s own families), None for them when it does not answer
    in time or answers anything but 200."""
    config = app[API_CONFIG]
    path = str(config.metrics_socket(index))
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=path),
                timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S),
            ) as http,
            http.get("http://api" + PROCESS_METRICS_PATH, headers={"Authorization": auth}) as r,
        ):
            if r.status != 200:
                log.warning("api process %d answered its metrics with %d", index, r.status)
                return index, None
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        log.warning("api process %d did not answer its metrics: %s", index, e)
        return index, None
    return index, list(text_string_to_metric_families(text))


async def process_metrics(request: web.Request) -> web.Response:
    """GET /metrics/process on the process's Unix socket: this process's own families,
    labelled with its index."""
    app = request.app[MAIN_APP]
    _allowed(request)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _Families(_labelled(_ProcessCollector(app).collect(), str(app[PROCESS_INDEX])))
    )
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def process_metrics_app(app: web.Application) -> web.Application:
    """The small app an API process serves on its Unix socket (one route)."""
    inner = web.Application()
    inner[MAIN_APP] = app
    inner[CONTEXT] = app[CONTEXT]
    inner.router.add_get(PROCESS_METRICS_PATH, process_metrics)
    return inner
