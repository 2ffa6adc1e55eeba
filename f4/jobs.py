"""The f4 queue of the job framework (common/jobs): `migrate` (one sealed Haystack volume
into the cell, checked end to end), `rebuild` (one volume's damaged blocks) and
`rebalance` (one volume's healthy blocks moved for placement, f4.rebalance), on the
metadata database, so `pinhole jobs` lists, dead-letters and retries them like the others.

Invariants:
- At most one job per kind and volume not yet done (`enqueue` reuses it); each job has its
  own dedupe key ("<kind>:<volume>:<job id>"), so a volume can be migrated again when its
  f4 copy was lost after an earlier migration, and rebuilt any number of times.
- The f4 jobs of a cell run only in a process holding the cell's lock (ops/f4_cmds.py), so
  such a process finds every f4 job still marked running orphaned (its process was killed)
  and queues it again at once (`release_orphans`) instead of waiting out its lease. The
  work itself resumes from what is on disk (f4.encoder's journal, f4.rebuild).
- The work runs in a thread as a LocalJob while the runner renews the lease; a lost lease
  cancels the LocalJob and the work raises LocalJobCancelled at its next step.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa

from common import jobs as framework
from common.db import Database
from common.db import Migration as SchemaMigration
from common.ids import IdGenerator
from common.jobs import Job, JobKind, JobLease, JobQueue, JobState, JobStore, RetryPolicy
from common.jobs.local import LocalJob
from common.jobs.runner import Handler
from common.jobs.schema import jobs, jobs_create_steps
from f4.cell import Cell
from f4.config import F4Config
from f4.rebuild import RebuildProgress

QUEUE: Final = "f4"
LOCK: Final = "f4_jobs"
COMPONENT: Final = "f4"
MIGRATIONS: Final = (
    SchemaMigration(1, "f4 jobs in the job framework's table", jobs_create_steps()),
)


def retry_policy(config: F4Config) -> RetryPolicy:
    return RetryPolicy(config.attempts_max, config.backoff_s_base, config.backoff_s_max)


_DEFAULT_RETRY: Final = retry_policy(F4Config())

framework.register_queue(JobQueue(QUEUE, lock=LOCK))
# Rebuilds first: a stripe short of blocks is closer to losing data than a volume waiting
# to migrate is to anything.
REBUILD: Final = framework.register(JobKind("rebuild", QUEUE, _DEFAULT_RETRY, priority=0))
MIGRATE: Final = framework.register(JobKind("migrate", QUEUE, _DEFAULT_RETRY, priority=1))
# Moving healthy blocks (f4.rebalance) waits for both.
REBALANCE: Final = framework.register(JobKind("rebalance", QUEUE, _DEFAULT_RETRY, priority=2))
KINDS: Final = (MIGRATE, REBUILD, REBALANCE)

_J = jobs.c


def worker_name() -> str:
    return f"f4:{socket.gethostname()}:{os.getpid()}"


async def jobs_of(db: Database, kind: JobKind, volume: int) -> list[Job]:
    """The volume's jobs of `kind`, newest first."""
    query = (
        sa.select(jobs)
        .where(_J.queue == QUEUE, _J.kind == kind.name, _J.subject_id == volume)
        .order_by(_J.job_id.desc())
    )
    async with db.snapshot() as conn:
        return [Job.from_row(r) for r in (await conn.execute(query)).all()]


async def current(db: Database, job_ids: list[int]) -> dict[int, Job]:
    """The jobs as they are now, by id."""
    async with db.snapshot() as conn:
        rows = (await conn.execute(sa.select(jobs).where(_J.job_id.in_(job_ids)))).all()
    return {j.job_id: j for j in (Job.from_row(r) for r in rows)}


async def enqueue(
    db: Database, id_gen: IdGenerator, kind: JobKind, volume: int, *, now: float, attempts_max: int
) -> Job:
    """The volume's job of `kind` not yet done (queued, running, or dead until an operator
    retries it), else a new one."""
    async with db.transaction(lock=LOCK) as conn:
        query = sa.select(jobs).where(
            _J.queue == QUEUE,
            _J.kind == kind.name,
            _J.subject_id == volume,
            _J.state != JobState.DONE,
        )
        row = (await conn.execute(query.limit(1))).first()
        if row is not None:
            return Job.from_row(row)
        job_id = id_gen.next_id()
        await framework.enqueue(
            conn,
            kind,
            job_id=job_id,
            subject_id=volume,
            dedupe_key=f"{kind.name}:{volume}:{job_id}",
            now=now,
            attempts_max=attempts_max,
        )
        return Job.from_row((await conn.execute(sa.select(jobs).where(_J.job_id == job_id))).one())


async def release_orphans(store: JobStore) -> list[int]:
    """Queues again every f4 job marked running (the caller holds the cell's lock, so their
    processes are gone); a kill is not a failed attempt. The ids released."""
    async with store.db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(jobs).where(_J.queue == QUEUE, _J.state == JobState.RUNNING)
            )
        ).all()
    released = []
    for job in (Job.from_row(r) for r in rows):
        assert job.lease_owner is not None
        if await store.defer(job, worker=job.lease_owner, delay_s=0.0):
            released.append(job.job_id)
    return released


@dataclass
class Outcomes:
    """What each job of this run did: its result, or the error of its failed attempt."""

    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # job id ->
    errors: dict[int, str] = field(default_factory=dict)


MigrateProgress = Callable[[int, float], None]  # volume, fraction done
RebuildProgressFor = Callable[[int, RebuildProgress], None]


def handlers(
    cell: Cell,
    outcomes: Outcomes,
    *,
    on_migrate: MigrateProgress | None = None,
    on_rebuild: RebuildProgressFor | None = None,
    parity: bool = False,
) -> dict[str, Handler]:
    """`parity`: rebuilds also rewrite blocks whose stripe's parity disagrees (they read
    every block: `pinhole f4 rebuild --parity`)."""

    async def in_thread(lease: JobLease, work: Callable[[LocalJob], dict[str, Any]]) -> None:
        local = LocalJob(f"f4-{lease.job.kind}", lease.job.subject_id)
        try:
            outcomes.results[lease.job.job_id] = await asyncio.shield(
                asyncio.to_thread(work, local)
            )
        except asyncio.CancelledError:
            local.cancel()
            raise
        except Exception as e:
            outcomes.errors[lease.job.job_id] = f"{type(e).__name__}: {e}"
            raise

    async def migrate(lease: JobLease) -> None:
        volume = lease.job.subject_id

        def work(local: LocalJob) -> dict[str, Any]:
            def progress(fraction: float) -> None:
                if on_migrate is not None:
                    on_migrate(volume, fraction)

            return cell.migrate(volume, progress=progress, job=local)

        await in_thread(lease, work)

    async def rebuild(lease: JobLease) -> None:
        volume = lease.job.subject_id

        def work(local: LocalJob) -> dict[str, Any]:
            def progress(p: RebuildProgress) -> None:
                if on_rebuild is not None:
                    on_rebuild(volume, p)

            stats = cell.rebuild(volume, progress=progress, job=local, parity=parity)
            return {
                "volume": volume,
                "blocks_rebuilt": stats.blocks_rebuilt,
                "blocks_found_done": stats.blocks_found_done,
                "bytes_written": stats.bytes_written,
                "bytes_read": stats.bytes_read,
                "seconds": round(stats.seconds, 3),
                "mb_per_s": round(stats.mb_per_s, 3),
                "throttle_mb_s": cell.config.rebuild_mb_s,
            }

        await in_thread(lease, work)

    async def rebalance(lease: JobLease) -> None:
        volume = lease.job.subject_id

        def work(local: LocalJob) -> dict[str, Any]:
            return cell.rebalance(volume, job=local).as_json()

        await in_thread(lease, work)

    return {MIGRATE.name: migrate, REBUILD.name: rebuild, REBALANCE.name: rebalance}
