"""Prometheus text for /metrics, read from the node's statistics() at scrape time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.jobs.local import LocalJob
from common.request_metrics import RequestMetrics
from store.node import StoreNode

_VOLUME_GAUGES = (
    ("size_bytes", "Bytes in the volume file"),
    ("size_bytes_max", "The volume's size limit"),
    ("needles_live", "Live needles"),
    ("bytes_live", "Bytes of live needles"),
    ("garbage_bytes", "Bytes of deleted and overwritten needles"),
    ("garbage_ratio", "Garbage bytes over used bytes"),
    ("queue_needles", "Writes waiting for the writer"),
    ("needle_map_bytes", "RAM held by the needle map"),
)
_VOLUME_COUNTERS = (
    ("writes", "Needles written"),
    ("write_bytes", "Bytes written"),
    ("deletes", "Needles deleted"),
    ("syncs", "Group commits (fdatasync calls)"),
    ("sync_failures", "Failed writes or syncs"),
    ("writes_refused", "Writes refused because the queue was full"),
    ("compactions", "Compactions completed"),
)
_NODE_COUNTERS = (
    ("reads", "Needles served"),
    ("read_bytes", "Bytes served"),
    ("reads_from_cache", "Reads served from the page cache without waiting"),
    ("reads_from_disk", "Reads that missed the page cache and went to the device"),
    ("reads_not_found", "Reads answered 404"),
    ("reads_corrupt", "Reads that found corrupt bytes (never served)"),
    ("read_errors", "Reads that failed with an I/O error"),
    ("reads_refused", "Reads refused because too many waited for the disk"),
    ("reads_internal", "Internal reads (no cookie: replica repair)"),
    ("dat_read_bytes", "Bytes of volume files sent to pulling nodes"),
)
_SCRUB_COUNTERS = (
    ("passes", "Scrub passes over a volume"),
    ("bytes_scrubbed", "Bytes read and checked by the scrubber"),
    ("corrupt_found", "Corrupt live needles the scrubber found"),
    ("reports_sent", "Corrupt needles reported to the directory for repair"),
    ("reports_failed", "Repair reports the directory did not take (retried)"),
)


class _NodeCollector:
    def __init__(self, node: StoreNode) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        st = self._node.statistics()
        node_label = ["node"]
        for name, doc in _NODE_COUNTERS:
            c = CounterMetricFamily(f"pinhole_store_{name}", doc, labels=node_label)
            c.add_metric([st.node_id], getattr(st, name))
            yield c
        for name, doc in _SCRUB_COUNTERS:
            c = CounterMetricFamily(f"pinhole_store_scrub_{name}", doc, labels=node_label)
            c.add_metric([st.node_id], getattr(st.scrub, name))
            yield c
        if st.heartbeat is not None:
            g = GaugeMetricFamily(
                "pinhole_store_directory_reachable",
                "1 when the last heartbeat reached the directory",
                labels=node_label,
            )
            g.add_metric([st.node_id], 1.0 if st.heartbeat.directory_reachable else 0.0)
            yield g
        g = GaugeMetricFamily(
            "pinhole_store_reads_waiting",
            "Page-cache misses waiting for the device",
            labels=node_label,
        )
        g.add_metric([st.node_id], st.reads_waiting)
        yield g
        g = GaugeMetricFamily(
            "pinhole_store_free_bytes", "Free bytes on the data disk", labels=node_label
        )
        g.add_metric([st.node_id], st.free_bytes)
        yield g
        labels = ["node", "volume"]
        for name, doc in _VOLUME_GAUGES:
            g = GaugeMetricFamily(f"pinhole_store_volume_{name}", doc, labels=labels)
            for v in st.volumes:
                g.add_metric([st.node_id, str(v.volume_id)], getattr(v, name))
            yield g
        for name, doc in _VOLUME_COUNTERS:
            c = CounterMetricFamily(f"pinhole_store_volume_{name}", doc, labels=labels)
            for v in st.volumes:
                c.add_metric([st.node_id, str(v.volume_id)], getattr(v, name))
            yield c
        g = GaugeMetricFamily(
            "pinhole_store_volume_writable", "1 when the volume takes writes", labels=labels
        )
        for v in st.volumes:
            g.add_metric([st.node_id, str(v.volume_id)], 1.0 if v.mode == "writable" else 0.0)
        yield g
        yield from _local_jobs(st.node_id, self._node.jobs)


_JOB_KINDS = ("compact", "verify", "scrub", "pull")


def _local_jobs(node_id: str, jobs: Mapping[tuple[int, str], LocalJob]) -> Iterator[Metric]:
    """Compaction, verify, scrub and pull: how many run, and each running one's progress."""
    running = [job for job in jobs.values() if job.running]
    g = GaugeMetricFamily(
        "pinhole_store_local_jobs_running",
        "Node-local jobs running (compact, verify, scrub, pull)",
        labels=["node", "kind"],
    )
    for kind in _JOB_KINDS:
        g.add_metric([node_id, kind], sum(1 for job in running if job.kind == kind))
    yield g
    g = GaugeMetricFamily(
        "pinhole_store_local_job_progress_ratio",
        "Share of its work a running node-local job has done (0..1)",
        labels=["node", "volume", "kind"],
    )
    for job in running:
        g.add_metric([node_id, str(job.subject), job.kind], job.progress)
    yield g


def render(node: StoreNode, requests: RequestMetrics | None = None) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(node))
    if requests is not None:
        registry.register(requests)
    return generate_latest(registry), CONTENT_TYPE_LATEST
