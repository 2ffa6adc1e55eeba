"""Time for the job framework: a `Clock` protocol, the system clock, and a manual clock
for tests.

`now()` is Unix seconds (the unit of every `*_unix_s` column); `sleep(s)` waits s seconds
of that clock. `ManualClock` moves only when a test calls `advance`: sleepers whose time
has come wake in deadline order, so a test decides exactly when a lease expires or a
backoff ends without waiting in real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that stands still until `advance` moves it (tests)."""

    def __init__(self, start_unix_s: float = 1_700_000_000.0) -> None:
        self._now = start_unix_s
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (a test waits for a task to reach its sleep)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Moves the clock forward and wakes, in deadline order, every sleeper whose time
        has come; each woken task runs until it next waits before the next one wakes."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                for _ in range(5):
                    await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)
