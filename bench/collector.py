"""The benchmarks' own process and the cyclic collector: set-up frozen out of its sight
(as the services do once they are up) and the full collections that ran during a
measurement counted, so that a figure says whether a collection landed in it."""

from __future__ import annotations

import gc
import time
from typing import Any


def freeze_setup() -> None:
    """Moves every object alive now out of the cyclic collector's sight, as `serve_forever`
    does once the API is up: set-up's objects live as long as the process, and a full
    collection that walks them again (35-80 ms at ~100,000 objects on this machine) would
    land in the reads it measures. Frozen objects are still freed by reference counting."""
    gc.collect()
    gc.freeze()


class FullCollections:
    """Counts the full (generation 2) collections run while it is entered, and their
    longest pause, through `gc.callbacks`."""

    def __init__(self) -> None:
        self.count = 0
        self.pause_s_max = 0.0
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.count += 1
            self.pause_s_max = max(self.pause_s_max, time.perf_counter() - self._started)
            self._started = None

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def statistics(self) -> dict[str, Any]:
        return {"count": self.count, "pause_ms_max": round(self.pause_s_max * 1000, 2)}
