"""The durable job queue of the media pipeline, in the metadata database (BRIEF §4).

A job row is inserted in the same transaction as its media row, so an acknowledged upload
always has its job. Workers claim the first runnable job, lower lane first (photos before
video), smaller first within a lane, under a lease they renew while working. A job whose
lease ran out (its worker died) is runnable again. Failure backs off exponentially; the
attempt that reaches attempts_max dead-letters the job (and fails its media) until an
operator retries it (`pinhole jobs retry`).

States: queued -> running -> done | (queued again after a failure) | dead.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from transformer.schema import jobs, media

LOCK: Final = "media_jobs"
# Kinds: "photo" and "video" make a media's variants; "rekey" rewrites them under a new
# cookie (transformer/rekey.py). Re-keys share the photo lane: they copy bytes, they do not
# transcode, and an owner waiting to be private should not wait behind videos.
LANES: Final = {"photo": 0, "video": 1, "rekey": 0}
STATES: Final = ("queued", "running", "done", "dead")
LIST_ROWS_MAX: Final = 1000
ERROR_CHARS_MAX: Final = 2000


@dataclass(frozen=True, slots=True)
class Job:
    job_id: int
    media_id: int
    kind: str
    lane: int
    size_bytes: int
    state: str
    attempts: int
    attempts_max: int
    run_after_unix_s: float
    lease_owner: str | None
    lease_expires_unix_s: float | None
    last_error: str | None
    created_unix_s: float
    updated_unix_s: float

    def as_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["job_id"] = str(self.job_id)
        doc["media_id"] = str(self.media_id)
        return doc


_JOB_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Job))


def _job(row: Any) -> Job:
    return Job(**{name: row._mapping[name] for name in _JOB_FIELDS})


async def enqueue(
    conn: AsyncConnection,
    *,
    job_id: int,
    media_id: int,
    kind: str,
    size_bytes: int,
    attempts_max: int,
    now: float | None = None,
) -> None:
    """Records a job inside the caller's transaction (the one that inserts the media)."""
    now = time.time() if now is None else now
    await conn.execute(
        jobs.insert().values(
            job_id=job_id,
            media_id=media_id,
            kind=kind,
            lane=LANES[kind],
            size_bytes=size_bytes,
            state="queued",
            attempts=0,
            attempts_max=attempts_max,
            run_after_unix_s=now,
            created_unix_s=now,
            updated_unix_s=now,
        )
    )


async def claim(db: Database, *, worker: str, lease_s: float) -> Job | None:
    """The next runnable job, now leased to `worker` with its attempt counted; None if none."""
    now = time.time()
    runnable = sa.or_(
        sa.and_(jobs.c.state == "queued", jobs.c.run_after_unix_s <= now),
        sa.and_(jobs.c.state == "running", jobs.c.lease_expires_unix_s < now),
    )
    async with db.transaction(lock=LOCK) as conn:
        row = (
            await conn.execute(
                sa.select(jobs.c.job_id)
                .where(runnable)
                .order_by(jobs.c.lane, jobs.c.size_bytes, jobs.c.job_id)
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        await conn.execute(
            jobs.update()
            .where(jobs.c.job_id == row.job_id)
            .values(
                state="running",
                attempts=jobs.c.attempts + 1,
                lease_owner=worker,
                lease_expires_unix_s=now + lease_s,
                updated_unix_s=now,
            )
        )
        got = (await conn.execute(sa.select(jobs).where(jobs.c.job_id == row.job_id))).one()
    return _job(got)


async def renew(db: Database, job: Job, *, worker: str, lease_s: float) -> bool:
    """Extends the lease; False when the job is no longer this worker's (it must stop)."""
    now = time.time()
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            jobs.update()
            .where(
                jobs.c.job_id == job.job_id,
                jobs.c.state == "running",
                jobs.c.lease_owner == worker,
            )
            .values(lease_expires_unix_s=now + lease_s, updated_unix_s=now)
        )
    return bool(result.rowcount)


async def finish(conn: AsyncConnection, job: Job, *, worker: str) -> bool:
    """Marks the job done inside the caller's transaction (the one that publishes the
    media); False when the lease was lost meanwhile (the caller must roll back)."""
    result = await conn.execute(
        jobs.update()
        .where(jobs.c.job_id == job.job_id, jobs.c.state == "running", jobs.c.lease_owner == worker)
        .values(
            state="done", lease_owner=None, lease_expires_unix_s=None, updated_unix_s=time.time()
        )
    )
    return bool(result.rowcount)


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Delay before attempt `attempt` + 1: base * 2^(attempt-1), capped, with +-20% jitter
    so jobs that failed together do not retry together."""
    delay = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return float(delay * random.uniform(0.8, 1.2))


async def fail(
    db: Database, job: Job, *, worker: str, error: str, base_s: float, max_s: float
) -> str:
    """Records a failed attempt: back to queued after the backoff, or dead (and its media
    failed) when it was the last. Returns the new state ("" if the lease was lost)."""
    now = time.time()
    dead = job.attempts >= job.attempts_max
    values: dict[str, Any] = {
        "state": "dead" if dead else "queued",
        "lease_owner": None,
        "lease_expires_unix_s": None,
        "last_error": error[:ERROR_CHARS_MAX],
        "updated_unix_s": now,
    }
    if not dead:
        values["run_after_unix_s"] = now + backoff_s(job.attempts, base_s=base_s, max_s=max_s)
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            jobs.update()
            .where(
                jobs.c.job_id == job.job_id, jobs.c.state == "running", jobs.c.lease_owner == worker
            )
            .values(**values)
        )
        if not result.rowcount:
            return ""
        if dead:
            await conn.execute(
                media.update()
                .where(media.c.media_id == job.media_id, media.c.status == "processing")
                .values(status="failed", error_code="processing_failed")
            )
    return str(values["state"])


async def listing(
    db: Database, *, state: str | None = None, limit: int = LIST_ROWS_MAX
) -> list[Job]:
    """Jobs, newest first, optionally of one state."""
    query = sa.select(jobs).order_by(jobs.c.job_id.desc()).limit(min(limit, LIST_ROWS_MAX))
    if state is not None:
        query = query.where(jobs.c.state == state)
    async with db.snapshot() as conn:
        return [_job(r) for r in (await conn.execute(query)).all()]


async def counts(db: Database) -> dict[str, int]:
    """Jobs per state (every state present, zero when none)."""
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state))
        ).all()
    out = dict.fromkeys(STATES, 0)
    out.update({str(r[0]): int(r[1]) for r in rows})
    return out


async def retry(db: Database, job_ids: list[int] | None = None) -> list[int]:
    """Puts dead jobs (these ids, or every dead one) back in the queue with a fresh attempt
    budget; their media turn processing again. Returns the ids requeued."""
    now = time.time()
    async with db.transaction(lock=LOCK) as conn:
        query = sa.select(jobs.c.job_id, jobs.c.media_id).where(jobs.c.state == "dead")
        if job_ids is not None:
            query = query.where(jobs.c.job_id.in_(job_ids))
        rows = (await conn.execute(query)).all()
        ids = [int(r.job_id) for r in rows]
        if ids:
            await conn.execute(
                jobs.update()
                .where(jobs.c.job_id.in_(ids))
                .values(state="queued", attempts=0, run_after_unix_s=now, updated_unix_s=now)
            )
            await conn.execute(
                media.update()
                .where(media.c.media_id.in_([int(r.media_id) for r in rows]))
                .where(media.c.status == "failed")
                .values(status="processing", error_code=None)
            )
    return ids
