"""The durable leased job queue on the metadata database (SQLite or PostgreSQL).

- `enqueue` inserts inside the caller's transaction, so a job commits with what it is for
  (a media and its transcode, a post and its publish) or not at all.
- `claim` leases the runnable job first in order (priority, weight, run_after, job_id) of
  one queue and counts the attempt. Runnable: queued and due, or running with its lease
  run out (its worker died). An idle queue is seen through a read snapshot first, so idle
  pollers never take the write lock; the claim itself runs in a write transaction on the
  queue's lock and its UPDATE re-checks that the row is still runnable, so two processes
  never hold the same job.
- `renew`, `finish`, `defer` and `fail` act only while the caller still holds the lease
  (state running, lease_owner = worker); they say when it did not.
- `fail` queues the job again after its backoff (with jitter), or dead-letters it when the
  attempt was its last (attempts >= attempts_max); `retry` queues dead jobs again with a
  fresh attempt count. The queue's hooks run in those transactions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.jobs.clock import Clock, SystemClock
from common.jobs.job import Job, JobState
from common.jobs.kind import KINDS, JobKind, KindRegistry, RetryPolicy
from common.jobs.schema import jobs

ERROR_CHARS_MAX: Final = 2000
LIST_ROWS_MAX: Final = 1000
# Candidates a claim tries before it reports nothing runnable (another process took the
# ones it saw between its read and its update).
CLAIM_TRIES_MAX: Final = 5

_J = jobs.c


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """Jobs per state of one queue (every state present, zero when none)."""

    queue: str
    counts: dict[JobState, int]

    def as_json(self) -> dict[str, int]:
        return {str(state): n for state, n in self.counts.items()}


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """What waits in one queue for one kind of job (for /metrics): jobs queued (runnable
    now or later) and running, and the age in seconds of the oldest queued job (0 when
    none waits)."""

    queue: str
    kind: str
    queued: int
    running: int
    oldest_queued_age_s: float


async def enqueue(
    conn: AsyncConnection,
    kind: JobKind,
    *,
    job_id: int,
    subject_id: int,
    now: float,
    owner_id: int | None = None,
    dedupe_key: str | None = None,
    weight: int = 0,
    attempts_max: int | None = None,
) -> None:
    """Records a queued job inside the caller's transaction. `dedupe_key` (default: the
    subject id) is unique per queue; `attempts_max` defaults to the kind's policy."""
    await conn.execute(
        jobs.insert().values(
            job_id=job_id,
            queue=kind.queue,
            kind=kind.name,
            subject_id=subject_id,
            owner_id=owner_id,
            dedupe_key=str(subject_id) if dedupe_key is None else dedupe_key,
            priority=kind.priority,
            weight=weight,
            state=JobState.QUEUED,
            attempts=0,
            attempts_max=kind.retry.attempts_max if attempts_max is None else attempts_max,
            run_after_unix_s=now,
            created_unix_s=now,
            updated_unix_s=now,
        )
    )


def _leased_by(job: Job, worker: str) -> sa.ColumnElement[bool]:
    return sa.and_(_J.job_id == job.job_id, _J.state == JobState.RUNNING, _J.lease_owner == worker)


class JobStore:
    """The jobs table of one Database, with the clock and the jitter's randomness."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        kinds: KindRegistry = KINDS,
    ) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.kinds = kinds

    def _runnable(self, queue: str, now: float) -> sa.ColumnElement[bool]:
        return sa.and_(
            _J.queue == queue,
            sa.or_(
                sa.and_(_J.state == JobState.QUEUED, _J.run_after_unix_s <= now),
                sa.and_(_J.state == JobState.RUNNING, _J.lease_expires_unix_s < now),
            ),
        )

    async def claim(self, queue: str, *, worker: str, lease_s: float) -> Job | None:
        """The next runnable job of `queue`, now leased to `worker` for lease_s with its
        attempt counted; None when none is runnable."""
        now = self.clock.now()
        runnable = self._runnable(queue, now)
        async with self.db.snapshot() as conn:
            if (await conn.execute(sa.select(_J.job_id).where(runnable).limit(1))).first() is None:
                return None
        order = (_J.priority, _J.weight, _J.run_after_unix_s, _J.job_id)
        async with self.db.transaction(lock=self.kinds.queue(queue).lock) as conn:
            candidates = (
                await conn.execute(
                    sa.select(_J.job_id).where(runnable).order_by(*order).limit(CLAIM_TRIES_MAX)
                )
            ).all()
            for candidate in candidates:
                taken = await conn.execute(
                    jobs.update()
                    .where(_J.job_id == candidate.job_id, runnable)
                    .values(
                        state=JobState.RUNNING,
                        attempts=_J.attempts + 1,
                        lease_owner=worker,
                        lease_expires_unix_s=now + lease_s,
                        updated_unix_s=now,
                    )
                )
                if taken.rowcount:
                    row = (
                        await conn.execute(sa.select(jobs).where(_J.job_id == candidate.job_id))
                    ).one()
                    return Job.from_row(row)
        return None

    async def renew(self, job: Job, *, worker: str, lease_s: float) -> bool:
        """Extends the lease to lease_s from now; False when the job is no longer this
        worker's (it must stop)."""
        now = self.clock.now()
        async with self.db.transaction(lock=self.kinds.queue(job.queue).lock) as conn:
            result = await conn.execute(
                jobs.update()
                .where(_leased_by(job, worker))
                .values(lease_expires_unix_s=now + lease_s, updated_unix_s=now)
            )
        return bool(result.rowcount)

    async def finish_in(self, conn: AsyncConnection, job: Job, *, worker: str) -> bool:
        """Marks the job done inside the caller's transaction (the one that commits the
        job's effect); False when the lease was lost (the caller must roll back)."""
        result = await conn.execute(
            jobs.update()
            .where(_leased_by(job, worker))
            .values(
                state=JobState.DONE,
                lease_owner=None,
                lease_expires_unix_s=None,
                updated_unix_s=self.clock.now(),
            )
        )
        return bool(result.rowcount)

    async def finish(self, job: Job, *, worker: str) -> bool:
        async with self.db.transaction(lock=self.kinds.queue(job.queue).lock) as conn:
            return await self.finish_in(conn, job, worker=worker)

    async def defer(self, job: Job, *, worker: str, delay_s: float) -> bool:
        """Queues the job again after delay_s without spending an attempt (it waits for
        something, it did not fail); False when the lease was lost."""
        now = self.clock.now()
        async with self.db.transaction(lock=self.kinds.queue(job.queue).lock) as conn:
            result = await conn.execute(
                jobs.update()
                .where(_leased_by(job, worker))
                .values(
                    state=JobState.QUEUED,
                    attempts=sa.case((_J.attempts > 0, _J.attempts - 1), else_=0),
                    lease_owner=None,
                    lease_expires_unix_s=None,
                    run_after_unix_s=now + delay_s,
                    updated_unix_s=now,
                )
            )
        return bool(result.rowcount)

    async def fail(
        self, job: Job, *, worker: str, error: str, policy: RetryPolicy | None = None
    ) -> JobState | None:
        """Records a failed attempt: queued again after the backoff of `policy` (default:
        the kind's), or dead when it was the last. The new state; None if the lease was
        lost."""
        now = self.clock.now()
        policy = policy or self.kinds.get(job.kind).retry
        dead = job.attempts >= job.attempts_max
        values: dict[str, Any] = {
            "state": JobState.DEAD if dead else JobState.QUEUED,
            "lease_owner": None,
            "lease_expires_unix_s": None,
            "last_error": error[:ERROR_CHARS_MAX],
            "updated_unix_s": now,
        }
        if not dead:
            values["run_after_unix_s"] = now + policy.backoff_s(job.attempts, self.rng)
        queue = self.kinds.queue(job.queue)
        async with self.db.transaction(lock=queue.lock) as conn:
            result = await conn.execute(
                jobs.update().where(_leased_by(job, worker)).values(**values)
            )
            if not result.rowcount:
                return None
            if dead and queue.on_dead is not None:
                await queue.on_dead(conn, [job])
        return JobState(values["state"])

    async def listing(
        self, queue: str, *, state: JobState | None = None, limit: int = LIST_ROWS_MAX
    ) -> list[Job]:
        """Jobs of `queue`, newest first, optionally of one state."""
        query = (
            sa.select(jobs)
            .where(_J.queue == queue)
            .order_by(_J.job_id.desc())
            .limit(min(limit, LIST_ROWS_MAX))
        )
        if state is not None:
            query = query.where(_J.state == state)
        async with self.db.snapshot() as conn:
            return [Job.from_row(r) for r in (await conn.execute(query)).all()]

    async def statistics(self, queue: str) -> QueueStatistics:
        async with self.db.snapshot() as conn:
            rows = await conn.execute(
                sa.select(_J.state, sa.func.count()).where(_J.queue == queue).group_by(_J.state)
            )
            counts = dict.fromkeys(JobState, 0)
            counts.update({JobState(state): int(n) for state, n in rows})
        return QueueStatistics(queue, counts)

    async def depths(self, queues: Sequence[str] | None = None) -> list[QueueDepth]:
        """The depth of every kind of `queues` (default: every registered queue), read in
        one snapshot through the claim index (queue, state): finished jobs are never
        scanned. Kinds with nothing unfinished are listed with zeros."""
        now = self.clock.now()
        names = sorted(self.kinds.queues() if queues is None else queues)
        found: dict[tuple[str, str], list[Any]] = {
            (queue, kind.name): [0, 0, None]
            for queue in names
            for kind in self.kinds.of_queue(queue)
        }
        async with self.db.snapshot() as conn:
            for queue in names:
                rows = await conn.execute(
                    sa.select(_J.kind, _J.state, sa.func.count(), sa.func.min(_J.created_unix_s))
                    .where(_J.queue == queue, _J.state.in_([JobState.QUEUED, JobState.RUNNING]))
                    .group_by(_J.kind, _J.state)
                )
                for kind, state, n, first in rows:
                    entry = found.setdefault((queue, kind), [0, 0, None])
                    if state == JobState.QUEUED:
                        entry[0], entry[2] = int(n), first
                    else:
                        entry[1] = int(n)
        return [
            QueueDepth(
                queue,
                kind,
                queued,
                running,
                max(0.0, now - oldest) if oldest is not None else 0.0,
            )
            for (queue, kind), (queued, running, oldest) in sorted(found.items())
        ]

    async def retry(self, queue: str, job_ids: Sequence[int] | None = None) -> list[int]:
        """Queues dead jobs of `queue` again (those named, or every one) with a fresh
        attempt count; the ids requeued."""
        now = self.clock.now()
        spec = self.kinds.queue(queue)
        query = sa.select(jobs).where(_J.queue == queue, _J.state == JobState.DEAD)
        if job_ids is not None:
            query = query.where(_J.job_id.in_(list(job_ids)))
        async with self.db.transaction(lock=spec.lock) as conn:
            dead = [Job.from_row(r) for r in (await conn.execute(query)).all()]
            ids = [j.job_id for j in dead]
            if ids:
                await conn.execute(
                    jobs.update()
                    .where(_J.job_id.in_(ids))
                    .values(
                        state=JobState.QUEUED,
                        attempts=0,
                        run_after_unix_s=now,
                        updated_unix_s=now,
                    )
                )
                if spec.on_retry is not None:
                    await spec.on_retry(conn, dead)
        return ids
