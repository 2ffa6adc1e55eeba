"""Prometheus text for the router's /metrics, read from statistics() at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from router.http_api import RouterHttpApi

_ROUTER_HELP: Final = {
    "photos_served": "Photo answers with bytes (200/206/416)",
    "photos_not_modified": "Photo answers 304 (If-None-Match)",
    "photos_not_found": "Photo answers 404: absent, deleted, wrong cookie or unknown volume",
    "photos_bad_url": "Requests answered 404 bad_path",
    "photos_not_acceptable": "Negotiated photo requests whose Accept allows no format (406)",
    "photos_unavailable": "Photo answers 502/503: no replica or no directory answered",
    "cache_hits": "Variants a cache node served from memory",
    "cache_misses": "Variants a cache node fetched from a store",
    "cache_failures": "Requests to a cache node that failed (node then skipped a while)",
    "direct_reads": "Variants the router read from store replicas itself",
    "direct_read_failures": "Direct reads where no replica answered",
    "direct_reads_ticketed": "Direct reads served from an f4 storage node on a read ticket",
    "lookup_refreshes": "Volume lookups forced because the known replicas failed",
    "repair_reports": "Bad replica copies reported to the directory",
    "repair_reports_dropped": "Repair reports dropped (repair_reports_inflight_max)",
    "signed_served": "Photo answers to signed (private) URLs",
    "signed_refused": "Signed URLs refused as forged or expired (403)",
}
_LOOKUP_COUNTERS: Final = {
    "lookups": "Volume lookups asked of the lookup cache",
    "lookup_fetches": "Volume lookups fetched from the directory",
    "lookup_failures": "Directory lookups that failed",
    "stale_served": "Lookups answered from an expired entry while it was refreshed",
    "unknown_answered": "Lookups of unknown volumes answered without asking the directory",
    "probes": "Lookups of volume ids above the directory's highest (one at a time)",
    "cache_refresh_failures": "Failed refreshes of the cache node list",
}


class _RouterCollector:
    def __init__(self, api: RouterHttpApi) -> None:
        self._api = api

    def collect(self) -> Iterator[Metric]:
        api = self._api
        for name, value in asdict(api.statistics()).items():
            yield CounterMetricFamily(f"pinhole_router_{name}", _ROUTER_HELP[name], value=value)
        lookup = api.directory.statistics()
        for name, doc in _LOOKUP_COUNTERS.items():
            yield CounterMetricFamily(f"pinhole_router_{name}", doc, value=getattr(lookup, name))
        yield GaugeMetricFamily(
            "pinhole_router_volumes_cached", "Volume lookups cached", value=lookup.volumes_cached
        )
        yield GaugeMetricFamily(
            "pinhole_router_unknown_volumes_cached",
            "Unknown volume ids remembered",
            value=lookup.unknown_volumes_cached,
        )
        yield GaugeMetricFamily(
            "pinhole_router_caches", "Cache nodes the directory lists alive", value=lookup.caches
        )
        server = api.server
        if server is not None:
            st = server.statistics()
            yield GaugeMetricFamily(
                "pinhole_router_connections_open",
                "Open client connections",
                value=st.connections_open,
            )
            c = CounterMetricFamily(
                "pinhole_router_responses", "HTTP responses by status class", labels=["class"]
            )
            for cls, n in st.responses_by_class.items():
                c.add_metric([cls], n)
            yield c


def render(api: RouterHttpApi) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RouterCollector(api))
    registry.register(api.requests)
    return generate_latest(registry), CONTENT_TYPE_LATEST
