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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api.context import CONTEXT
from api.errors import NotAuthenticated
from api.realtime_routes import broker_of
from common.credentials import Purpose
from common.jobs import JobStore, QueueDepth
from common.jobs.metrics import DepthCollector
from common.request_metrics import RequestMetrics
from feed import jobs as feed_jobs
from feed.runner import FanoutRunner

__all__ = ["FANOUT", "REQUESTS", "metrics"]

REQUESTS: Final = web.AppKey("requests", RequestMetrics)
FANOUT: Final = web.AppKey("fanout", FanoutRunner)


class _Collector:
    def __init__(self, app: web.Application, depths: list[QueueDepth]) -> None:
        self._app = app
        self._depths = depths

    def collect(self) -> Iterator[Metric]:
        feed = [d.oldest_queued_age_s for d in self._depths if d.queue == feed_jobs.QUEUE]
        yield GaugeMetricFamily(
            "pinhole_feed_fanout_lag_seconds",
            "Age of the oldest fan-out job still queued: how far timelines trail new posts",
            value=max(feed, default=0.0),
        )
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


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text (metrics or admin credential)."""
    app = request.app
    ctx = app[CONTEXT]
    auth = request.headers.get("Authorization")
    if not ctx.credentials.allows(auth, Purpose.METRICS, Purpose.ADMIN):
        raise NotAuthenticated("a metrics or admin internal credential is required")
    depths = await JobStore(ctx.db).depths()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(app[REQUESTS])
    registry.register(DepthCollector(depths))
    registry.register(_Collector(app, depths))
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
