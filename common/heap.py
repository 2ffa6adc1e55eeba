"""A long-running service's objects kept out of the cyclic collector's sight.

Every full (generation 2) collection walks every tracked object that is not frozen. A
service's long-lived objects (start-up's modules and app; an API's interned rows and
remembered documents, 312,000 objects at the feed benchmark's working set) make each
such walk ~100 ms on this machine, a pause that sets the p99 of the requests in flight.
The policy, one `HeapKeeper` per process:

- at start-up everything alive is frozen (`gc.freeze()`), as the API always did;
- after a full collection that took at least FREEZE_AFTER_FULL_MS, its survivors are
  frozen at once: the collection has just found them reachable, so the next full
  collections walk only what was made since, and stay short however large the caches
  grow;
- every REFREEZE_INTERVAL_S everything is unfrozen, collected and frozen again. A frozen
  object is still freed by reference counting the moment nothing refers to it, but a
  reference cycle that becomes garbage while frozen (the objects of a request in flight
  at the moment of a freeze) waits for this; what freezing holds back is bounded by one
  interval's worth, at the price of one long collection per interval.

The collector runs in whatever thread allocates; the callback only notes the pause and
hands the freeze to the event loop's thread (`call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any, Final

log = logging.getLogger("pinhole.heap")

# A full collection at least this long has its survivors frozen right after it.
FREEZE_AFTER_FULL_MS: Final = 10.0
# Everything is unfrozen, collected and frozen again this often.
REFREEZE_INTERVAL_S: Final = 600.0


class HeapKeeper:
    """Freezes what survives long full collections, and refreezes the whole heap every
    `refreeze_interval_s`; `start` on the event loop's thread, `close` when done."""

    def __init__(
        self,
        *,
        freeze_after_full_ms: float = FREEZE_AFTER_FULL_MS,
        refreeze_interval_s: float = REFREEZE_INTERVAL_S,
    ) -> None:
        self._freeze_after_s = freeze_after_full_ms / 1000
        self._interval_s = refreeze_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started_at: float | None = None
        self._freeze_due = False
        self.full_collections = 0
        self.full_pause_s_max = 0.0
        self.freezes = 0
        self.refreezes = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        gc.freeze()
        gc.callbacks.append(self._on_collection)
        self._timer = self._loop.call_later(self._interval_s, self._refreeze)

    def close(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started_at = time.perf_counter()
            return
        if self._started_at is None:
            return
        pause = time.perf_counter() - self._started_at
        self._started_at = None
        self.full_collections += 1
        self.full_pause_s_max = max(self.full_pause_s_max, pause)
        loop = self._loop
        if pause >= self._freeze_after_s and not self._freeze_due and loop is not None:
            self._freeze_due = True
            try:
                loop.call_soon_threadsafe(self._freeze)
            except RuntimeError:  # the loop is closed: nothing left to keep short
                self._freeze_due = False

    def _freeze(self) -> None:
        self._freeze_due = False
        gc.freeze()
        self.freezes += 1

    def _refreeze(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.refreezes += 1
        log.info(
            "heap refrozen in %.0f ms: %d objects frozen",
            (time.perf_counter() - started) * 1000,
            gc.get_freeze_count(),
        )
        if self._loop is not None:
            self._timer = self._loop.call_later(self._interval_s, self._refreeze)

    def statistics(self) -> dict[str, Any]:
        return {
            "full_collections": self.full_collections,
            "full_pause_ms_max": round(self.full_pause_s_max * 1000, 2),
            "freezes": self.freezes,
            "refreezes": self.refreezes,
            "frozen_objects": gc.get_freeze_count(),
        }
