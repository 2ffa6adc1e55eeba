"""The node's statistics: the read path's counters and the snapshot GET /status, the
metrics and the heartbeat read (`NodeStatistics`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from store.scrubber import ScrubStatistics
from store.volume import VolumeStatistics

if TYPE_CHECKING:
    from store.heartbeat import HeartbeatStatistics


@dataclass(slots=True)
class ReadCounters:
    """Counted by the read path (store/read_path.py), on the event loop only."""

    reads: int = 0
    read_bytes: int = 0
    reads_from_cache: int = 0
    reads_from_disk: int = 0
    reads_not_found: int = 0
    reads_corrupt: int = 0
    read_errors: int = 0
    reads_waiting: int = 0
    reads_refused: int = 0
    reads_internal: int = 0
    dat_reads: int = 0
    dat_read_bytes: int = 0


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    node_id: str
    failure_domain: str
    started_unix_s: float
    volumes: list[VolumeStatistics]
    reads: int
    read_bytes: int
    reads_from_cache: int
    reads_from_disk: int
    reads_not_found: int
    reads_corrupt: int
    read_errors: int
    reads_waiting: int
    reads_refused: int
    reads_internal: int
    dat_reads: int
    dat_read_bytes: int
    free_bytes: int
    scrub: ScrubStatistics
    heartbeat: HeartbeatStatistics | None
