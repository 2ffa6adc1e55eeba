"""Job queue depths as Prometheus families (read by the API for every queue it knows, and
by the f4 watcher for the f4 queue):

    pinhole_jobs_queued{queue, kind}                   jobs waiting, runnable now or later
    pinhole_jobs_running{queue, kind}                  jobs held under a lease
    pinhole_jobs_oldest_queued_age_seconds{queue, kind}   age of the oldest waiting job
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric

from common.jobs.queue import QueueDepth

__all__ = ["DepthCollector"]

_FAMILIES: Final = (
    ("pinhole_jobs_queued", "Jobs waiting (runnable now or later)", "queued"),
    ("pinhole_jobs_running", "Jobs held under a lease", "running"),
    (
        "pinhole_jobs_oldest_queued_age_seconds",
        "Age of the oldest job waiting (0 when none waits)",
        "oldest_queued_age_s",
    ),
)


class DepthCollector:
    """For a prometheus_client registry: depths read (`JobStore.depths`) before the scrape."""

    def __init__(self, depths: Sequence[QueueDepth]) -> None:
        self._depths = depths

    def collect(self) -> Iterator[Metric]:
        for name, doc, field in _FAMILIES:
            g = GaugeMetricFamily(name, doc, labels=["queue", "kind"])
            for d in self._depths:
                g.add_metric([d.queue, d.kind], getattr(d, field))
            yield g
