"""A media worker's /metrics (on its health endpoint; metrics or admin credential): the
jobs it ran by outcome and the media queue's depth, read at scrape time.

    pinhole_worker_jobs_total{worker, outcome}   done, failed, deferred, lease_lost
    pinhole_worker_busy{worker}                  1 while the worker holds a job
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from transformer.worker import Worker

__all__ = ["WorkerCollector"]


class WorkerCollector:
    """For a prometheus_client registry; `worker` is None until the worker started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.worker: Worker | None = None

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        c = CounterMetricFamily(
            "pinhole_worker_jobs", "Media jobs run, by outcome", labels=["worker", "outcome"]
        )
        st = worker.runner.statistics if worker is not None else None
        for outcome, field in (
            ("done", "done"),
            ("failed", "failed"),
            ("deferred", "deferred"),
            ("lease_lost", "lost"),
        ):
            c.add_metric([self.name, outcome], getattr(st, field) if st is not None else 0)
        yield c
        g = GaugeMetricFamily(
            "pinhole_worker_busy", "1 while the worker holds a job", labels=["worker"]
        )
        g.add_metric([self.name], 1.0 if worker is not None and worker.busy else 0.0)
        yield g
