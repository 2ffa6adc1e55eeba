"""Request rates and latency histograms per route, kept by every HTTP service and rendered
as Prometheus families at scrape time:

    <prefix>_requests_total{method, route, code}          counter, code = "2xx".."5xx"
    <prefix>_request_duration_seconds{method, route}      histogram, LATENCY_BUCKETS_S

`route` is a route template (`/api/v1/media/{media_id}`) or the operation a lean service
names (`/n/{volume}/{key}/{alt_key}/{cookie}`), never a raw path, so the label values are
a fixed set. Observing a request is a dict lookup, a bisect and three increments (no lock:
one event loop writes, a scrape on that loop reads), which is why the lean services keep
these instead of `prometheus_client.Histogram` (several times the cost per observation).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from common.json_logs import KNOWN_METHODS, AccessLog

__all__ = ["LATENCY_BUCKETS_S", "RequestMetrics", "RequestObserver"]

# Upper bounds in seconds: from a page-cache store read (~50 us) to a slow upload.
LATENCY_BUCKETS_S: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_STATUS_CLASSES: Final = 6  # index status // 100, 1xx..5xx; 0 for anything odd


class _Series:
    __slots__ = ("buckets", "codes", "sum_s")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size  # per bucket, not cumulative; the last is +Inf
        self.codes = [0] * _STATUS_CLASSES
        self.sum_s = 0.0


class RequestMetrics:
    """The counters of one service's requests (see the module docstring)."""

    def __init__(self, prefix: str, *, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        if list(bounds) != sorted(bounds) or not bounds:
            raise ValueError("bucket bounds must be ascending")
        self.prefix = prefix
        self._bounds = bounds
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        key = (method, route)
        s = self._series.get(key)
        if s is None:
            if method not in KNOWN_METHODS:
                method = "other"
                key = (method, route)
            s = self._series.get(key)
            if s is None:
                s = self._series[key] = _Series(len(self._bounds) + 1)
        s.buckets[bisect_left(self._bounds, duration_s)] += 1
        s.sum_s += duration_s
        cls = status // 100
        s.codes[cls if 0 < cls < _STATUS_CLASSES else 0] += 1

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            f"{self.prefix}_requests",
            "HTTP requests answered, by route template and status class",
            labels=["method", "route", "code"],
        )
        histogram = HistogramMetricFamily(
            f"{self.prefix}_request_duration_seconds",
            "Time from a complete request to its answer, by route template",
            labels=["method", "route"],
        )
        bounds = [*(repr(float(b)) for b in self._bounds), "+Inf"]
        for (method, route), s in sorted(self._series.items()):
            for cls, n in enumerate(s.codes):
                if n:
                    counter.add_metric([method, route, f"{cls}xx" if cls else "other"], n)
            cumulative = 0
            buckets = []
            for bound, n in zip(bounds, s.buckets, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            histogram.add_metric([method, route], buckets, s.sum_s)
        yield counter
        yield histogram


class RequestObserver:
    """What a service does at the end of every request: count it, time it, log it."""

    __slots__ = ("access_log", "metrics")

    def __init__(self, metrics: RequestMetrics, access_log: AccessLog | None) -> None:
        self.metrics = metrics
        self.access_log = access_log

    def done(self, request_id: str, method: str, route: str, status: int, started: float) -> None:
        """`started`: time.perf_counter() when the request was complete."""
        duration = time.perf_counter() - started
        self.metrics.observe(method, route, status, duration)
        if self.access_log is not None:
            self.access_log.record(request_id, method, route, status, duration)


RouteOf = Callable[[str, str], str]  # (method, path) -> route template or operation name
