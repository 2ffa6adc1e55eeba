"""Prometheus text for the directory's /metrics (metrics or admin credential), read from
the /status document at scrape time and the API's request metrics."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.request_metrics import RequestMetrics

__all__ = ["render"]

_GAUGES: Final = (
    ("nodes_alive", "Store, cache and f4 nodes whose heartbeat is recent"),
    ("nodes_down", "Registered nodes whose heartbeat is overdue"),
    ("volumes", "Logical volumes"),
    ("writable_volumes", "Logical volumes that take writes now"),
    ("under_replicated_volumes", "Active volumes with fewer ready, alive replicas than wanted"),
    ("pending_deletes", "Needle deletes not yet applied on every replica"),
    ("pending_repairs", "Reported bad copies not yet repaired"),
)
ALERTS: Final = ("no_writable_volume", "no_capacity")


class _Collector:
    def __init__(self, doc: Mapping[str, Any]) -> None:
        self._doc = doc

    def collect(self) -> Iterator[Metric]:
        doc = self._doc
        for name, help_text in _GAUGES:
            yield GaugeMetricFamily(f"pinhole_directory_{name}", help_text, value=doc[name])
        g = GaugeMetricFamily(
            "pinhole_directory_volumes_by_state", "Logical volumes by state", labels=["state"]
        )
        for state, n in doc["volumes_by_state"].items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily(
            "pinhole_directory_alert", "1 while the named alert holds", labels=["name"]
        )
        for alert in ALERTS:
            g.add_metric([alert], int(alert in doc["alerts"]))
        yield g
        c = CounterMetricFamily(
            "pinhole_directory_loop_passes",
            "Passes of the directory's leased loops run by this process",
            labels=["loop"],
        )
        for loop, n in sorted(doc["process"]["passes"].items()):
            c.add_metric([loop], n)
        yield c


def render(doc: Mapping[str, Any], requests: RequestMetrics) -> tuple[bytes, str]:
    """(body, content type) of the exposition; `doc` is http_api.status_doc's answer."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(doc))
    registry.register(requests)
    return generate_latest(registry), CONTENT_TYPE_LATEST
