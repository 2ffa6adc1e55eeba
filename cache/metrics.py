"""Prometheus text for the cache's /metrics, read from ``CacheNode.statistics()`` and the
HTTP client's statistics at scrape time (no counters kept twice)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from cache.node import CacheNode
    from common.request_metrics import RequestMetrics

__all__ = ["render_metrics"]

_COUNTERS = (
    ("hits", "GETs answered from the cache"),
    ("misses", "GETs not in the cache"),
    ("negative_hits", "Misses answered by a remembered 404"),
    ("coalesced", "Misses that joined a store read already in flight"),
    ("store_reads", "Store reads started (one per flight)"),
    ("store_reads_absent", "Store reads that found no replica with the needle"),
    ("store_reads_failed", "Store reads that no replica answered"),
    ("store_reads_ticketed", "Store reads served from an f4 storage node on a read ticket"),
    ("ticket_fallbacks", "Ticketed f4 reads that failed and were read in full instead"),
    ("ticket_batches", "Read ticket batches sent (POST /tickets to an f4 name node)"),
    ("ticket_batched_reads", "Store reads whose ticket was asked for in a batch"),
    ("fetches_refused", "Misses refused because inflight_fetches_max reads were running"),
    ("not_admitted", "Bodies served but not cached because the router did not admit them"),
    ("invalidations", "DELETE invalidations"),
    ("invalidated_in_flight", "Store reads whose result was not cached due to an invalidation"),
    ("bad_replicas_found", "Replicas found with a corrupt or missing copy"),
    ("repairs_reported", "Repair reports the directory accepted"),
    ("repairs_dropped", "Repair reports dropped because too many were in flight"),
)
_LRU_COUNTERS = (
    ("inserts", "Bodies stored"),
    ("evictions", "Bodies evicted to make room"),
    ("rejected_too_large", "Bodies over item_bytes_max (served, not cached)"),
    ("forgotten", "Bodies dropped by invalidations"),
)
_LRU_GAUGES = (
    ("items", "Bodies cached"),
    ("bytes", "Bytes charged to the cache (bodies plus per-entry overhead)"),
    ("data_bytes", "Bytes of cached bodies"),
    ("bytes_max", "cache_bytes_max"),
)


class _Collector:
    def __init__(self, node: CacheNode) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        st = self._node.statistics()
        labels = ["node"]
        node_id = [st.node_id]
        for name, doc in _COUNTERS:
            c = CounterMetricFamily(f"pinhole_cache_{name}", doc, labels=labels)
            c.add_metric(node_id, getattr(st, name))
            yield c
        for name, doc in _LRU_COUNTERS:
            c = CounterMetricFamily(f"pinhole_cache_lru_{name}", doc, labels=labels)
            c.add_metric(node_id, getattr(st.lru, name))
            yield c
        for name, doc in _LRU_GAUGES:
            g = GaugeMetricFamily(f"pinhole_cache_lru_{name}", doc, labels=labels)
            g.add_metric(node_id, getattr(st.lru, name))
            yield g
        g = GaugeMetricFamily(
            "pinhole_cache_fetches_inflight", "Store reads in flight", labels=labels
        )
        g.add_metric(node_id, st.fetches_inflight)
        yield g
        g = GaugeMetricFamily("pinhole_cache_negative_entries", "Remembered 404s", labels=labels)
        g.add_metric(node_id, st.negative_entries)
        yield g
        cs = self._node.client.statistics()
        c = CounterMetricFamily(
            "pinhole_cache_client_requests",
            "Requests to store nodes and the directory",
            labels=labels,
        )
        c.add_metric(node_id, cs.requests_total)
        yield c
        c = CounterMetricFamily(
            "pinhole_cache_client_connections_opened", "TCP connections opened", labels=labels
        )
        c.add_metric(node_id, cs.connections_opened)
        yield c
        c = CounterMetricFamily(
            "pinhole_cache_client_errors", "Client requests that failed", labels=["node", "kind"]
        )
        for kind, n in sorted(cs.errors_by_kind.items()):
            c.add_metric([st.node_id, kind], n)
        yield c


def render_metrics(node: CacheNode, requests: RequestMetrics | None = None) -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(node))
    if requests is not None:
        registry.register(requests)
    return generate_latest(registry), CONTENT_TYPE_LATEST
