"""The media queue on both engines (the framework itself: tests/common/jobs): claim order
(lanes, size), and the media row's status following its job through death and retry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.db import Database, migrate, open_database
from common.jobs import JobState, JobStore, ManualClock
from tests.directory.conftest import PG_URL, pg_schema
from transformer import jobs, media_store, schema
from transformer.config import MediaConfig


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
            attempts_max=attempts_max, now=time.time(),
        )  # fmt: skip


async def status(db: Database, media_id: int) -> str:
    got = await media_store.get(db, media_id)
    assert got is not None
    return got[0].status


async def test_photos_and_rekeys_before_video_and_small_before_large(db: Database) -> None:
    store = JobStore(db)
    await add(db, 1, "video", 1000)
    await add(db, 2, "photo", 9000)
    await add(db, 3, "photo", 500)
    await add(db, 4, "video", 10)
    await add(db, 5, "rekey", 700)
    order = []
    while (job := await store.claim(jobs.QUEUE, worker="w", lease_s=30)) is not None:
        order.append(job.subject_id)
        assert job.state == JobState.RUNNING and job.attempts == 1 and job.lease_owner == "w"
    assert order == [3, 5, 2, 4, 1]
    assert (await store.statistics(jobs.QUEUE)).as_json() == {
        "queued": 0, "running": 5, "done": 0, "dead": 0,
    }  # fmt: skip


async def test_a_dead_job_fails_its_media_and_retry_makes_it_processing(db: Database) -> None:
    await add(db, 9, "photo", 10, attempts_max=2)
    clock = ManualClock(time.time() + 1)
    store = JobStore(db, clock=clock)
    job = await store.claim(jobs.QUEUE, worker="w", lease_s=30)
    assert job is not None
    policy = jobs.retry_policy(MediaConfig(backoff_s_base=0.2))
    assert await store.fail(job, worker="w", error="boom 1", policy=policy) == JobState.QUEUED
    assert await status(db, 9) == "processing"
    await clock.advance(0.25)  # past the backoff, jitter included
    job = await store.claim(jobs.QUEUE, worker="w", lease_s=30)
    assert job is not None and job.attempts == 2
    assert await store.fail(job, worker="w", error="boom 2", policy=policy) == JobState.DEAD
    assert await status(db, 9) == "failed"
    assert await store.retry(jobs.QUEUE, [9, 12345]) == [9]
    assert await status(db, 9) == "processing"
    again = await store.claim(jobs.QUEUE, worker="w", lease_s=30)
    assert again is not None and again.attempts == 1


async def test_the_media_queue_finishes_inside_the_publishing_transaction(db: Database) -> None:
    store = JobStore(db)
    await add(db, 7, "photo", 10)
    job = await store.claim(jobs.QUEUE, worker="a", lease_s=30)
    assert job is not None
    async with db.transaction(lock=jobs.LOCK) as conn:
        assert not await store.finish_in(conn, job, worker="b")  # not b's lease
        assert await store.finish_in(conn, job, worker="a")
        assert await media_store.publish(conn, 7, width=1, height=1, placeholder="p")
    assert await status(db, 7) == "ready"
    assert (await store.statistics(jobs.QUEUE)).counts[JobState.DONE] == 1
