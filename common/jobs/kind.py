"""Job kinds: each is registered once by the package that owns it, with its queue and its
retry policy. The queue and the runner look a kind up by name; a name is registered once.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from common.jobs.errors import UnknownJobKind, UnknownQueue
from common.jobs.job import Job

# A failed attempt waits its nominal backoff times a factor drawn from this range, so jobs
# that failed together do not retry together.
JITTER_FACTOR_MIN: Final = 0.8
JITTER_FACTOR_MAX: Final = 1.2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A job is tried at most `attempts_max` times; after failed attempt n it waits
    backoff_s_base * 2^(n-1), capped at backoff_s_max, times the jitter factor."""

    attempts_max: int
    backoff_s_base: float
    backoff_s_max: float

    def __post_init__(self) -> None:
        if self.attempts_max < 1 or self.backoff_s_base < 0 or self.backoff_s_max < 0:
            raise ValueError(f"bad retry policy {self}")

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based)."""
        nominal = min(self.backoff_s_max, self.backoff_s_base * 2 ** max(0, attempt - 1))
        return float(nominal * rng.uniform(JITTER_FACTOR_MIN, JITTER_FACTOR_MAX))


@dataclass(frozen=True, slots=True)
class JobKind:
    """`priority`: the claim order among kinds of one queue (lower first)."""

    name: str
    queue: str
    retry: RetryPolicy
    priority: int = 0


# Called inside the transaction that changes the jobs' state.
QueueHook = Callable[[AsyncConnection, Sequence[Job]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobQueue:
    """A named queue. `on_dead` runs in the transaction that dead-letters a job (the media
    queue fails its media there), `on_retry` in the one that requeues dead jobs."""

    name: str
    # The write lock (common/db.py) of the queue's transactions: the owning package's own
    # transactions that finish or enqueue its jobs take the same one.
    lock: str
    on_dead: QueueHook | None = None
    on_retry: QueueHook | None = None


@dataclass(slots=True)
class KindRegistry:
    _kinds: dict[str, JobKind] = field(default_factory=dict)
    _queues: dict[str, JobQueue] = field(default_factory=dict)

    def register_queue(self, queue: JobQueue) -> JobQueue:
        known = self._queues.get(queue.name)
        if known is not None and known != queue:
            raise ValueError(f"job queue {queue.name!r} is already registered")
        self._queues[queue.name] = queue
        return queue

    def queue(self, name: str) -> JobQueue:
        try:
            return self._queues[name]
        except KeyError:
            raise UnknownQueue(f"unknown job queue {name!r}") from None

    def register(self, kind: JobKind) -> JobKind:
        """Registers `kind`; registering the same kind again is a no-op (module reloads),
        another kind under a taken name is a programming error."""
        self.queue(kind.queue)
        known = self._kinds.get(kind.name)
        if known is not None and known != kind:
            raise ValueError(f"job kind {kind.name!r} is already registered as {known}")
        self._kinds[kind.name] = kind
        return kind

    def get(self, name: str) -> JobKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownJobKind(f"unknown job kind {name!r}") from None

    def of_queue(self, queue: str) -> list[JobKind]:
        return [k for k in self._kinds.values() if k.queue == queue]

    def queues(self) -> list[str]:
        return sorted(self._queues)


KINDS: Final = KindRegistry()


def register_queue(queue: JobQueue) -> JobQueue:
    return KINDS.register_queue(queue)


def register(kind: JobKind) -> JobKind:
    return KINDS.register(kind)
