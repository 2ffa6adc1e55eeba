"""Prometheus text for the f4 processes' /metrics (metrics or admin credential), read at
scrape time from the counters the name node and the storage nodes keep anyway (no counter
kept twice): what an operator graphs to see a cell serve, degrade and lose disks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from common.request_metrics import RequestMetrics
    from f4.name_node import NameNode
    from f4.node_disk import NodeStatus

__all__ = ["STORAGE_NODE_COUNTERS", "render_name_node", "render_storage_node"]

_NAME_COUNTERS = (
    ("reads", "Blob reads asked of the name node"),
    ("reads_absent", "Reads answered 404: unknown blob, wrong cookie or deleted key"),
    ("tickets_issued", "Reads answered with a read ticket (the reader fetched the range)"),
    ("ticket_batches", "POST /tickets answered (several reads' tickets in one request)"),
    ("ticket_batch_reads", "Reads asked for in POST /tickets (a ticket or null each)"),
    ("healthy_reads", "Reads served from the blob's own data block"),
    ("degraded_reads", "Reads reconstructed from 10 other blocks of the stripe"),
    ("bytes_served", "Plaintext bytes served"),
    ("bytes_read", "Block and sidecar bytes read from storage nodes for reads"),
    ("deletes", "Deletes taken"),
    ("keys_destroyed", "Blob keys destroyed (and purged) by deletes"),
    ("key_lookups", "Key store lookups for reads"),
    ("key_lookup_batches", "Key store lookup batches (one thread wake-up each)"),
)
STORAGE_NODE_COUNTERS = (
    ("checked_reads_inline", "Checked ranges answered from the page cache on the event loop"),
    ("checked_reads_threaded", "Checked ranges read on the disk threads"),
    ("ranges_corrupt", "Checked ranges refused because a chunk failed its sum"),
    ("tickets_accepted", "Checked range reads allowed by a read ticket (a cache or router's)"),
    ("tickets_refused", "Read tickets refused: forged, expired or for another range (403)"),
    ("range_batches", "POST /ranges answered: several checked ranges in one request"),
    ("range_reads", "Unchecked range and whole-object reads"),
    ("bytes_read", "Bytes answered by reads"),
    ("chunks_written", "Upload chunks appended (a whole-object put counts as one)"),
    ("bytes_written", "Upload bytes appended (and whole objects put)"),
    ("commits", "Uploads committed and whole objects put (fsync, rename, directory fsync)"),
)


def _counters(
    prefix: str, names: Iterable[tuple[str, str]], values: Mapping[str, Any], label: str
) -> Iterator[Metric]:
    for name, doc in names:
        c = CounterMetricFamily(f"{prefix}_{name}", doc, labels=["node"])
        c.add_metric([label], values[name])
        yield c


class _NameCollector:
    def __init__(self, node: NameNode, node_id: str) -> None:
        self._node = node
        self._id = node_id

    def collect(self) -> Iterator[Metric]:
        st = self._node.statistics()
        yield from _counters("pinhole_f4_name", _NAME_COUNTERS, st, self._id)
        g = GaugeMetricFamily(
            "pinhole_f4_name_volumes_served", "Volumes with a verified mark", labels=["node"]
        )
        g.add_metric([self._id], len(st["volumes_served"]))
        yield g
        c = CounterMetricFamily(
            "pinhole_f4_name_block_errors",
            "Storage node requests that failed before an answer, by kind",
            labels=["node", "kind"],
        )
        for kind, n in sorted(st["block_client_errors"].items()):
            c.add_metric([self._id, kind], n)
        yield c


class _NodeCollector:
    def __init__(self, counters: Mapping[str, int], disks: list[NodeStatus]) -> None:
        self._counters = counters
        self._disks = disks

    def collect(self) -> Iterator[Metric]:
        yield from _counters("pinhole_f4_node", STORAGE_NODE_COUNTERS, self._counters, "process")
        for name, doc in (
            ("up", "1 when the disk's directory is there"),
            ("objects", "Blocks, sidecars and index copies on the disk"),
            ("bytes", "Bytes of those objects"),
            ("free_bytes", "Free bytes of the disk's filesystem"),
            ("uploads_open", "Uploads open on the disk"),
        ):
            g = GaugeMetricFamily(f"pinhole_f4_disk_{name}", doc, labels=["disk"])
            for d in self._disks:
                g.add_metric([d.node], int(getattr(d, name)))
            yield g


def _render(*collectors: object) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def render_name_node(
    node: NameNode, node_id: str, requests: RequestMetrics | None = None
) -> tuple[bytes, str]:
    """(body, content type) of the name node's Prometheus text exposition."""
    return _render(_NameCollector(node, node_id), *([requests] if requests else []))


def render_storage_node(
    counters: Mapping[str, int], disks: list[NodeStatus], requests: RequestMetrics | None = None
) -> tuple[bytes, str]:
    """(body, content type) of a storage node's exposition: its counters and its disks."""
    return _render(_NodeCollector(counters, disks), *([requests] if requests else []))
