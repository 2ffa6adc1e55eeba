"""Fixtures for the job framework's tests: a database with its tables on SQLite and on
PostgreSQL, a registry of test queues, a manual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database, Migration, migrate, open_database
from common.jobs import Job, JobKind, JobQueue, JobStore, ManualClock, RetryPolicy
from common.jobs.kind import KindRegistry
from common.jobs.schema import jobs_create_steps, leases_create_steps
from tests.directory.conftest import PG_URL, pg_schema

COMPONENT = "jobs_test"
MIGRATIONS = (Migration(1, "job framework tables", [*jobs_create_steps(), *leases_create_steps()]),)
QUEUE = "alpha"
POLICY = RetryPolicy(attempts_max=3, backoff_s_base=10.0, backoff_s_max=100.0)


class Hooks:
    """Records what the queue's hooks saw (the ids, per call)."""

    def __init__(self) -> None:
        self.dead: list[list[int]] = []
        self.retried: list[list[int]] = []

    async def on_dead(self, conn: AsyncConnection, jobs: Sequence[Job]) -> None:
        self.dead.append([j.job_id for j in jobs])

    async def on_retry(self, conn: AsyncConnection, jobs: Sequence[Job]) -> None:
        self.retried.append([j.job_id for j in jobs])


def registry(hooks: Hooks | None = None) -> KindRegistry:
    kinds = KindRegistry()
    kinds.register_queue(
        JobQueue(
            QUEUE,
            lock="alpha_jobs",
            on_dead=hooks.on_dead if hooks else None,
            on_retry=hooks.on_retry if hooks else None,
        )
    )
    kinds.register(JobKind("fast", QUEUE, POLICY, priority=0))
    kinds.register(JobKind("slow", QUEUE, POLICY, priority=1))
    return kinds


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(url, PostgreSQL schema or "") of a fresh database with the framework's tables."""
    if request.param == "sqlite":
        url = str(tmp_path / "jobs.sqlite3")
        database = await open_database(url)
        try:
            await migrate(database, COMPONENT, MIGRATIONS)
        finally:
            await database.close()
        yield url, ""
        return
    async with pg_schema() as name:
        database = await open_database(PG_URL, schema=name)
        try:
            await migrate(database, COMPONENT, MIGRATIONS)
        finally:
            await database.close()
        yield PG_URL, name


@pytest.fixture
async def db(db_url: tuple[str, str]) -> AsyncIterator[Database]:
    url, schema = db_url
    database = await open_database(url, schema=schema or None)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def store(db: Database, clock: ManualClock, hooks: Hooks) -> JobStore:
    import random

    return JobStore(db, clock=clock, rng=random.Random(7), kinds=registry(hooks))


async def until(check: Callable[[], Awaitable[bool]], *, what: str, timeout_s: float = 10) -> None:
    """Waits (real time) until `check()` holds; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
