"""Single-flight fetches: concurrent misses on one needle share one store read.

A ``Flight`` is one fetch in progress, keyed by (vid, key, alt, cookie). The first miss
starts it as its own Task (so a caller that goes away does not cancel the read the others
wait for); later misses on the same key join it and await the same result. The table
holds at most ``inflight_max`` flights: a miss that would start one more raises
``TooManyFetches`` (the API answers 503), joining an existing flight is always allowed.

Invalidation: ``invalidate(vid, key)`` marks every flight of that key invalidated and takes
it out of the table. The fetch still completes for the callers already waiting (they asked
before the invalidation), but its owner must not cache the result (it checks
``flight.invalidated`` when the fetch is done), and a miss after the invalidation starts a
new fetch instead of joining the old one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from cache.errors import CacheError
from cache.lru import NeedleKey

__all__ = ["Flight", "FlightTable", "TooManyFetches"]

T = TypeVar("T")


class TooManyFetches(CacheError):
    """``inflight_fetches_max`` distinct fetches are already running."""

    status = 503
    code = "busy"
    retry_after_s = 1.0


class Flight(Generic[T]):
    """One fetch. ``admit`` is True when any caller that joined asked for the result to be
    cached; ``joined`` counts callers beyond the first."""

    __slots__ = ("admit", "invalidated", "joined", "key", "task")

    def __init__(self, key: NeedleKey, *, admit: bool) -> None:
        self.key = key
        self.admit = admit
        self.invalidated = False
        self.joined = 0
        self.task: asyncio.Task[T] | None = None

    async def wait(self) -> T:
        """The fetch's result (or its exception). Cancelling the caller does not cancel
        the fetch."""
        assert self.task is not None
        return await asyncio.shield(self.task)


class FlightTable(Generic[T]):
    def __init__(self, *, inflight_max: int) -> None:
        if inflight_max < 1:
            raise ValueError("inflight_max must be >= 1")
        self.inflight_max = inflight_max
        self._flights: dict[NeedleKey, Flight[T]] = {}
        self._by_group: dict[tuple[int, int], set[NeedleKey]] = {}
        self._running: set[asyncio.Task[T]] = set()  # includes invalidated flights
        self.started = 0
        self.joins = 0
        self.refused = 0
        self.invalidated = 0

    def __len__(self) -> int:
        return len(self._running)

    def join_or_start(
        self,
        key: NeedleKey,
        fetch: Callable[[Flight[T]], Awaitable[T]],
        *,
        admit: bool,
    ) -> Flight[T]:
        """The flight for ``key``: the running one (joined), or a new one running
        ``fetch(flight)``. Raises TooManyFetches when a new one would exceed the limit."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.joined += 1
            flight.admit = flight.admit or admit
            self.joins += 1
            return flight
        if len(self._running) >= self.inflight_max:
            self.refused += 1
            raise TooManyFetches(
                f"{self.inflight_max} store reads already in flight (inflight_fetches_max)"
            )
        flight = Flight[T](key, admit=admit)
        self._flights[key] = flight
        self._by_group.setdefault((key[0], key[1]), set()).add(key)
        task = asyncio.get_running_loop().create_task(self._run(flight, fetch))
        flight.task = task
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(_retrieve)
        self.started += 1
        return flight

    async def _run(self, flight: Flight[T], fetch: Callable[[Flight[T]], Awaitable[T]]) -> T:
        try:
            return await fetch(flight)
        finally:
            # In the same step as fetch's last action (storing the result), so no miss can
            # fall between "not cached yet" and "no flight to join".
            self._drop(flight)

    def _drop(self, flight: Flight[T]) -> None:
        key = flight.key
        if self._flights.get(key) is flight:
            del self._flights[key]
            group = (key[0], key[1])
            keys = self._by_group[group]
            keys.discard(key)
            if not keys:
                del self._by_group[group]

    def invalidate(self, vid: int, key: int) -> int:
        """Marks the flights of every variant of (vid, key) invalidated; how many."""
        keys = self._by_group.get((vid, key))
        if not keys:
            return 0
        flights = [self._flights[k] for k in keys]
        for flight in flights:
            flight.invalidated = True
            self._drop(flight)
        self.invalidated += len(flights)
        return len(flights)

    async def close(self) -> None:
        """Cancels every running fetch."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)


def _retrieve(task: asyncio.Task[T]) -> None:
    # Every caller may have gone away: mark the exception retrieved so asyncio does not log
    # "exception was never retrieved" for a failure the callers already saw (or did not).
    if not task.cancelled():
        task.exception()
