"""What operators do to any queue (`pinhole jobs`): list jobs, see the dead letters, retry
them, count jobs per state. `queues_named("all")` is every registered queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from common.jobs.errors import UnknownQueue
from common.jobs.job import Job, JobState
from common.jobs.kind import KINDS, KindRegistry
from common.jobs.queue import LIST_ROWS_MAX, JobStore, QueueStatistics

ALL_QUEUES: Final = "all"


def queues_named(name: str, kinds: KindRegistry = KINDS) -> list[str]:
    """The queues `name` stands for; UnknownQueue when it is none of them."""
    known = kinds.queues()
    if name == ALL_QUEUES:
        return known
    if name not in known:
        raise UnknownQueue(f"unknown queue {name!r} (known: {', '.join([*known, ALL_QUEUES])})")
    return [name]


async def listing(
    store: JobStore,
    queues: Sequence[str],
    *,
    state: JobState | None = None,
    limit: int = LIST_ROWS_MAX,
) -> list[Job]:
    """Jobs of these queues, newest first, at most `limit`."""
    found: list[Job] = []
    for queue in queues:
        found += await store.listing(queue, state=state, limit=limit)
    found.sort(key=lambda j: j.job_id, reverse=True)
    return found[: min(limit, LIST_ROWS_MAX)]


async def statistics(store: JobStore, queues: Sequence[str]) -> list[QueueStatistics]:
    return [await store.statistics(q) for q in queues]


async def retry(
    store: JobStore, queues: Sequence[str], job_ids: Sequence[int] | None = None
) -> list[int]:
    """Requeues dead jobs of these queues (those named, or all); the ids requeued."""
    requeued: list[int] = []
    for queue in queues:
        requeued += await store.retry(queue, job_ids)
    return sorted(requeued)
