"""The durable job queue on both engines: claim order (lanes, size), leases and takeover,
backoff, dead letters and retry, and the media row's status following its job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from common.db import Database, migrate, open_database
from tests.directory.conftest import PG_URL, pg_schema
from transformer import jobs, media_store, schema


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = await open_database(tmp_path / "media.sqlite3")
        try:
            await migrate(database, schema.COMPONENT, schema.MIGRATIONS)
            yield database
        finally:
            await database.close()
        return
    async with pg_schema() as name:
        database = await open_database(PG_URL, schema=name)
        try:
            await migrate(database, schema.COMPONENT, schema.MIGRATIONS)
            yield database
        finally:
            await database.close()


async def add(db: Database, media_id: int, kind: str, size: int, attempts_max: int = 3) -> None:
    row = media_store.MediaRow(
        media_id, 1, "image" if kind == "photo" else "video", "processing", 1, size, 100, 100,
        None, None, "00" * 8, 1, None, None, time.time(), None, None, None,
    )  # fmt: skip
    async with db.transaction(lock=jobs.LOCK) as conn:
        await media_store.insert(conn, row)
        await jobs.enqueue(
            conn, job_id=media_id, media_id=media_id, kind=kind, size_bytes=size,
            attempts_max=attempts_max,
        )  # fmt: skip


async def status(db: Database, media_id: int) -> str:
    got = await media_store.get(db, media_id)
    assert got is not None
    return got[0].status


async def claim_within(db: Database, *, worker: str, deadline_s: float = 10.0) -> jobs.Job:
    """The job `worker` claims once one is runnable, polling until deadline_s."""
    deadline = time.monotonic() + deadline_s
    while (job := await jobs.claim(db, worker=worker, lease_s=30)) is None:
        assert time.monotonic() < deadline, f"{worker} claimed nothing in {deadline_s} s"
        await asyncio.sleep(0.02)
    return job


async def test_photos_before_video_and_small_before_large(db: Database) -> None:
    await add(db, 1, "video", 1000)
    await add(db, 2, "photo", 9000)
    await add(db, 3, "photo", 500)
    await add(db, 4, "video", 10)
    order = []
    while (job := await jobs.claim(db, worker="w", lease_s=30)) is not None:
        order.append(job.media_id)
        assert job.state == "running" and job.attempts == 1 and job.lease_owner == "w"
    assert order == [3, 2, 4, 1]
    assert (await jobs.counts(db)) == {"queued": 0, "running": 4, "done": 0, "dead": 0}


async def test_an_expired_lease_lets_another_worker_take_the_job(db: Database) -> None:
    await add(db, 7, "photo", 10)
    first = await jobs.claim(db, worker="a", lease_s=30)
    assert first is not None
    assert await jobs.claim(db, worker="b", lease_s=30) is None  # leased
    assert await jobs.renew(db, first, worker="a", lease_s=0.2)  # then not renewed again
    second = await claim_within(db, worker="b")
    assert second.job_id == 7 and second.attempts == 2
    # The first worker lost it: it can neither renew nor complete nor fail it.
    assert not await jobs.renew(db, first, worker="a", lease_s=30)
    async with db.transaction(lock=jobs.LOCK) as conn:
        assert not await jobs.finish(conn, first, worker="a")
    assert await jobs.fail(db, first, worker="a", error="x", base_s=1, max_s=1) == ""
    async with db.transaction(lock=jobs.LOCK) as conn:
        assert await jobs.finish(conn, second, worker="b")
        assert await media_store.publish(conn, 7, width=1, height=1, placeholder="p")
    assert await status(db, 7) == "ready"
    assert (await jobs.counts(db))["done"] == 1


async def test_failures_back_off_then_dead_letter_and_retry_requeues(db: Database) -> None:
    await add(db, 9, "photo", 10, attempts_max=2)
    job = await jobs.claim(db, worker="w", lease_s=30)
    assert job is not None
    failed_at = time.time()
    assert await jobs.fail(db, job, worker="w", error="boom 1", base_s=0.2, max_s=5) == "queued"
    (queued,) = await jobs.listing(db, state="queued")  # backing off: 0.2 s, +-20%
    assert 0.16 <= queued.run_after_unix_s - failed_at <= 0.24 + (time.time() - failed_at)
    job = await claim_within(db, worker="w")
    assert job.attempts == 2
    assert await jobs.fail(db, job, worker="w", error="boom 2", base_s=0.2, max_s=5) == "dead"
    assert await status(db, 9) == "failed"
    dead = await jobs.listing(db, state="dead")
    assert [(j.job_id, j.last_error) for j in dead] == [(9, "boom 2")]
    assert await jobs.claim(db, worker="w", lease_s=30) is None
    assert await jobs.retry(db, [9, 12345]) == [9]
    assert await status(db, 9) == "processing"
    again = await jobs.claim(db, worker="w", lease_s=30)
    assert again is not None and again.attempts == 1


async def test_a_job_backing_off_is_not_claimed(db: Database) -> None:
    await add(db, 11, "photo", 10)
    job = await jobs.claim(db, worker="w", lease_s=30)
    assert job is not None
    assert await jobs.fail(db, job, worker="w", error="boom", base_s=30, max_s=60) == "queued"
    assert await jobs.claim(db, worker="w", lease_s=30) is None  # 24 s to wait, at least


def test_backoff_doubles_and_is_capped() -> None:
    for attempt, nominal in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        got = jobs.backoff_s(attempt, base_s=2.0, max_s=60.0)
        assert nominal * 0.8 <= got <= nominal * 1.2


async def test_two_workers_never_claim_the_same_job(db: Database) -> None:
    for i in range(20):
        await add(db, 100 + i, "photo", i)

    async def drain(name: str) -> list[int]:
        got = []
        while (job := await jobs.claim(db, worker=name, lease_s=30)) is not None:
            got.append(job.job_id)
        return got

    a, b = await asyncio.gather(drain("a"), drain("b"))
    assert sorted(a + b) == list(range(100, 120))
    assert not set(a) & set(b)
    async with db.snapshot() as conn:
        owners = (await conn.execute(sa.select(schema.jobs.c.lease_owner))).scalars().all()
    assert set(owners) <= {"a", "b"}
