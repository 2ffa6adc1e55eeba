"""CPU seconds used by a set of processes and their descendants, and CPU per request.

`ProcessCpu` reads utime+stime (user plus system CPU seconds) from /proc through psutil at
`start()`, at `stop()`, and every `interval_s` seconds in between from a background thread,
so descendants that appear during the run (e.g. nginx workers forked after start) are
picked up, and a process that exits before `stop()` still counts up to its last sample.
Children that are born and reaped between two samples are not seen; the peers measured
here keep long-lived workers, so that loss is nil in practice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import psutil

ProcessKey = tuple[int, float]
"""A process identity that survives pid reuse: (pid, creation time in seconds)."""


def cpu_us_per_request(seconds: float, requests: int) -> float:
    """CPU microseconds per request, from CPU `seconds` spent serving `requests` requests."""
    if requests <= 0:
        raise ValueError(f"requests must be positive, got {requests}")
    return seconds * 1e6 / requests


class ProcessCpu:
    """CPU seconds (user + system) used by `pids` and all their descendants."""

    def __init__(self, pids: Sequence[int], *, interval_s: float = 0.25) -> None:
        self.pids = list(pids)
        self.interval_s = interval_s
        self.baseline_s: dict[ProcessKey, float] = {}
        self.latest_s: dict[ProcessKey, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sampler: threading.Thread | None = None

    def start(self) -> None:
        """Take the baseline now and begin sampling in the background."""
        if self.sampler is not None:
            raise RuntimeError("ProcessCpu is already started")
        with self.lock:
            self.baseline_s = self.read_tree()
            self.latest_s = dict(self.baseline_s)
        self.stopping.clear()
        self.sampler = threading.Thread(target=self.sample_loop, name="ProcessCpu", daemon=True)
        self.sampler.start()

    def stop(self) -> float:
        """CPU seconds consumed by the processes since `start()`."""
        if self.sampler is None:
            raise RuntimeError("ProcessCpu.stop() before start()")
        self.stopping.set()
        self.sampler.join()
        self.sampler = None
        self.sample()
        with self.lock:
            return sum(
                max(0.0, seconds - self.baseline_s.get(key, 0.0))
                for key, seconds in self.latest_s.items()
            )

    def __enter__(self) -> ProcessCpu:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.sampler is not None:
            self.stop()

    def sample_loop(self) -> None:
        """Sample every `interval_s` seconds until `stop()`."""
        while not self.stopping.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Record the current CPU seconds of every live process of the trees."""
        current = self.read_tree()
        with self.lock:
            self.latest_s.update(current)

    def read_tree(self) -> dict[ProcessKey, float]:
        """CPU seconds of the root processes and their live descendants, by process key."""
        seconds_by_key: dict[ProcessKey, float] = {}
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in family:
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        key = (process.pid, process.create_time())
                except psutil.NoSuchProcess:
                    continue
                seconds_by_key[key] = float(times.user + times.system)
        return seconds_by_key
