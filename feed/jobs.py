"""The fan-out job queue in the metadata database. Jobs are claimed oldest runnable first
under a lease (a process killed mid-job loses it and the job runs again: every handler is
idempotent). A failure backs off exponentially; the attempt reaching attempts_max
dead-letters the job until an operator retries it (`pinhole feed jobs retry`). Waiting for
a post's media to turn ready is a deferral, not a failed attempt."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from feed.schema import jobs

LOCK: Final = "feed_jobs"
KINDS: Final = ("publish", "retract")
ERROR_CHARS_MAX: Final = 2000
LIST_ROWS_MAX: Final = 1000


@dataclass(frozen=True, slots=True)
class Job:
    job_id: int
    kind: str
    post_id: int
    author_id: int
    state: str
    attempts: int
    run_after_unix_s: float
    lease_owner: str | None
    lease_expires_unix_s: float | None
    last_error: str | None
    created_unix_s: float
    updated_unix_s: float

    def as_json(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("job_id", "post_id", "author_id"):
            doc[name] = str(doc[name])
        return doc


def _job(row: Any) -> Job:
    return Job(**row._mapping)


async def enqueue(
    conn: AsyncConnection, id_gen: IdGenerator, kind: str, *, post_id: int, author_id: int
) -> None:
    """Records a job inside the caller's transaction (one per kind and post)."""
    assert kind in KINDS
    now = time.time()
    await conn.execute(
        jobs.insert().values(
            job_id=id_gen.next_id(),
            kind=kind,
            post_id=post_id,
            author_id=author_id,
            state="queued",
            attempts=0,
            run_after_unix_s=now,
            created_unix_s=now,
            updated_unix_s=now,
        )
    )


async def claim(db: Database, *, worker: str, lease_s: float) -> Job | None:
    """Leases the runnable job due first, or None. An idle queue is seen through a read
    snapshot: an idle runner polling every fraction of a second never takes the write
    lock."""
    now = time.time()
    j = jobs.c
    runnable = sa.or_(
        sa.and_(j.state == "queued", j.run_after_unix_s <= now),
        sa.and_(j.state == "running", j.lease_expires_unix_s < now),
    )
    async with db.snapshot() as conn:
        if (await conn.execute(sa.select(j.job_id).where(runnable).limit(1))).first() is None:
            return None
    async with db.transaction(lock=LOCK) as conn:
        row = (
            await conn.execute(
                sa.select(jobs).where(runnable).order_by(j.run_after_unix_s, j.job_id).limit(1)
            )
        ).first()
        if row is None:
            return None
        await conn.execute(
            jobs.update()
            .where(j.job_id == row.job_id)
            .values(
                state="running",
                lease_owner=worker,
                lease_expires_unix_s=now + lease_s,
                updated_unix_s=now,
            )
        )
    return _job(row)


async def finish(db: Database, job: Job, *, worker: str) -> bool:
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            jobs.update()
            .where(jobs.c.job_id == job.job_id, jobs.c.lease_owner == worker)
            .values(
                state="done",
                lease_owner=None,
                lease_expires_unix_s=None,
                updated_unix_s=time.time(),
            )
        )
    return bool(result.rowcount)


async def defer(db: Database, job: Job, *, worker: str, delay_s: float) -> None:
    now = time.time()
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            jobs.update()
            .where(jobs.c.job_id == job.job_id, jobs.c.lease_owner == worker)
            .values(
                state="queued",
                lease_owner=None,
                lease_expires_unix_s=None,
                run_after_unix_s=now + delay_s,
                updated_unix_s=now,
            )
        )


async def fail(
    db: Database,
    job: Job,
    *,
    worker: str,
    error: str,
    attempts_max: int,
    backoff_s_base: float,
    backoff_s_max: float,
) -> str:
    """Records a failed attempt; returns the job's new state (queued or dead)."""
    now = time.time()
    attempts = job.attempts + 1
    state = "dead" if attempts >= attempts_max else "queued"
    delay = min(backoff_s_max, backoff_s_base * 2 ** (attempts - 1))
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            jobs.update()
            .where(jobs.c.job_id == job.job_id, jobs.c.lease_owner == worker)
            .values(
                state=state,
                attempts=attempts,
                lease_owner=None,
                lease_expires_unix_s=None,
                run_after_unix_s=now + delay,
                last_error=error[:ERROR_CHARS_MAX],
                updated_unix_s=now,
            )
        )
    return state


async def listing(db: Database, *, state: str | None, limit: int = LIST_ROWS_MAX) -> list[Job]:
    query = sa.select(jobs).order_by(jobs.c.job_id.desc()).limit(min(limit, LIST_ROWS_MAX))
    if state is not None:
        query = query.where(jobs.c.state == state)
    async with db.snapshot() as conn:
        return [_job(r) for r in await conn.execute(query)]


async def counts(db: Database) -> dict[str, int]:
    async with db.snapshot() as conn:
        rows = await conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state))
        return {str(s): int(n) for s, n in rows}


async def retry(db: Database, job_ids: list[int] | None = None) -> list[int]:
    """Queues dead jobs again (those named, or all) with a fresh attempt count."""
    now = time.time()
    query = sa.select(jobs.c.job_id).where(jobs.c.state == "dead")
    if job_ids:
        query = query.where(jobs.c.job_id.in_(job_ids))
    async with db.transaction(lock=LOCK) as conn:
        found = [int(r[0]) for r in await conn.execute(query)]
        if found:
            await conn.execute(
                jobs.update()
                .where(jobs.c.job_id.in_(found))
                .values(state="queued", attempts=0, run_after_unix_s=now, updated_unix_s=now)
            )
    return found
