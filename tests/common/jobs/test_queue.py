"""The durable leased queue on SQLite and PostgreSQL: claim order, exclusivity across
connections and processes, lease expiry and takeover, backoff with jitter, dead letters,
retry, deferral, dedupe and statistics."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from common.db import Database, open_database
from common.jobs import JobState, JobStore, ManualClock, enqueue
from common.jobs.kind import JITTER_FACTOR_MAX, JITTER_FACTOR_MIN, RetryPolicy
from common.jobs.schema import jobs
from tests.common.jobs.conftest import POLICY, QUEUE, Hooks, registry

REPO = Path(__file__).resolve().parents[3]


async def add(
    store: JobStore, job_id: int, kind: str = "fast", *, weight: int = 0, attempts_max: int = 3
) -> None:
    async with store.db.transaction(lock="alpha_jobs") as conn:
        await enqueue(
            conn,
            store.kinds.get(kind),
            job_id=job_id,
            subject_id=job_id * 10,
            now=store.clock.now(),
            weight=weight,
            attempts_max=attempts_max,
        )


async def test_claims_in_priority_then_weight_then_due_order(store: JobStore) -> None:
    await add(store, 1, "slow", weight=5)
    await add(store, 2, "fast", weight=900)
    await add(store, 3, "fast", weight=50)
    await add(store, 4, "slow", weight=1)
    await add(store, 5, "fast", weight=50)
    order = []
    while (job := await store.claim(QUEUE, worker="w", lease_s=30)) is not None:
        assert job.state == JobState.RUNNING and job.attempts == 1 and job.lease_owner == "w"
        assert job.lease_expires_unix_s == store.clock.now() + 30
        order.append(job.job_id)
    assert order == [3, 5, 2, 4, 1]
    stats = await store.statistics(QUEUE)
    assert stats.counts == {
        JobState.QUEUED: 0,
        JobState.RUNNING: 5,
        JobState.DONE: 0,
        JobState.DEAD: 0,
    }


async def test_enqueue_is_part_of_the_callers_transaction_and_deduplicated(
    store: JobStore,
) -> None:
    with pytest.raises(RuntimeError):
        async with store.db.transaction(lock="alpha_jobs") as conn:
            await enqueue(conn, store.kinds.get("fast"), job_id=1, subject_id=7, now=0)
            raise RuntimeError("the caller's transaction fails")
    assert await store.listing(QUEUE) == []
    await add(store, 2)
    with pytest.raises(sa.exc.IntegrityError):
        async with store.db.transaction(lock="alpha_jobs") as conn:
            await enqueue(conn, store.kinds.get("slow"), job_id=3, subject_id=20, now=0)
    assert [j.job_id for j in await store.listing(QUEUE)] == [2]


async def test_two_connections_never_claim_the_same_job(
    store: JobStore, db_url: tuple[str, str]
) -> None:
    for i in range(30):
        await add(store, 100 + i, weight=i)
    url, schema = db_url
    other_db = await open_database(url, schema=schema or None)
    try:
        other = JobStore(other_db, clock=store.clock, kinds=store.kinds)

        async def drain(s: JobStore, name: str) -> list[int]:
            got = []
            while (job := await s.claim(QUEUE, worker=name, lease_s=30)) is not None:
                got.append(job.job_id)
            return got

        a, b = await asyncio.gather(drain(store, "a"), drain(other, "b"))
    finally:
        await other_db.close()
    assert sorted(a + b) == list(range(100, 130))
    assert not set(a) & set(b)


CLAIMER = textwrap.dedent(
    """
    import asyncio, json, sys
    from common.db import open_database
    from common.jobs import JobStore
    from tests.common.jobs.conftest import QUEUE, registry

    async def main(url, schema, name):
        db = await open_database(url, schema=schema or None)
        try:
            store = JobStore(db, kinds=registry())
            got = []
            while (job := await store.claim(QUEUE, worker=name, lease_s=300)) is not None:
                got.append(job.job_id)
            print(json.dumps(got))
        finally:
            await db.close()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_processes_never_claim_the_same_job(db: Database, db_url: tuple[str, str]) -> None:
    store = JobStore(db, kinds=registry())  # the system clock: shared with the processes
    for i in range(60):
        await add(store, 1000 + i, weight=i)
    url, schema = db_url
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLAIMER,
            url,
            schema,
            f"p{n}",
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
        )
        for n in range(3)
    ]
    outputs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    claimed = [json.loads(out) for out, _ in outputs]
    every = [job_id for got in claimed for job_id in got]
    assert sorted(every) == list(range(1000, 1060))  # each exactly once
    owners = {j.job_id: j.lease_owner for j in await store.listing(QUEUE)}
    for n, got in enumerate(claimed):
        assert all(owners[job_id] == f"p{n}" for job_id in got)


async def test_an_expired_lease_is_taken_over_and_the_first_worker_is_shut_out(
    store: JobStore, clock: ManualClock
) -> None:
    await add(store, 7)
    first = await store.claim(QUEUE, worker="a", lease_s=10)
    assert first is not None
    assert await store.claim(QUEUE, worker="b", lease_s=10) is None  # leased
    await clock.advance(9)
    assert await store.renew(first, worker="a", lease_s=10)  # until t+19
    await clock.advance(9)
    assert await store.claim(QUEUE, worker="b", lease_s=10) is None
    await clock.advance(2)  # t+20: the renewed lease ran out
    second = await store.claim(QUEUE, worker="b", lease_s=10)
    assert second is not None and second.job_id == 7 and second.attempts == 2
    assert not await store.renew(first, worker="a", lease_s=10)
    assert not await store.finish(first, worker="a")
    assert not await store.defer(first, worker="a", delay_s=1)
    assert await store.fail(first, worker="a", error="late") is None
    assert await store.finish(second, worker="b")
    (done,) = await store.listing(QUEUE, state=JobState.DONE)
    assert done.lease_owner is None and done.attempts == 2


def test_backoff_doubles_is_capped_and_jitter_stays_in_bounds() -> None:
    policy = RetryPolicy(attempts_max=20, backoff_s_base=2.0, backoff_s_max=60.0)
    rng = random.Random(1)
    for attempt, nominal in ((1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (15, 60.0)):
        got = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert all(nominal * JITTER_FACTOR_MIN <= d <= nominal * JITTER_FACTOR_MAX for d in got)
        assert max(got) - min(got) > nominal * 0.2  # jittered, not constant


async def test_a_failure_backs_off_by_the_policy_with_the_injected_jitter(
    store: JobStore, clock: ManualClock
) -> None:
    await add(store, 9)
    job = await store.claim(QUEUE, worker="w", lease_s=30)
    assert job is not None
    expected = POLICY.backoff_s(1, random.Random(7))  # the store's rng, same seed
    assert await store.fail(job, worker="w", error="boom") == JobState.QUEUED
    (queued,) = await store.listing(QUEUE, state=JobState.QUEUED)
    assert queued.run_after_unix_s == pytest.approx(clock.now() + expected)
    assert queued.last_error == "boom" and queued.lease_owner is None
    await clock.advance(expected - 0.01)
    assert await store.claim(QUEUE, worker="w", lease_s=30) is None  # still backing off
    await clock.advance(0.02)
    again = await store.claim(QUEUE, worker="w", lease_s=30)
    assert again is not None and again.attempts == 2


async def test_the_last_attempt_dead_letters_and_retry_requeues(
    store: JobStore, clock: ManualClock, hooks: Hooks
) -> None:
    await add(store, 11, attempts_max=2)
    await add(store, 12, weight=1, attempts_max=2)  # claimed after 11 whenever 11 is due
    job = await store.claim(QUEUE, worker="w", lease_s=30)
    assert job is not None and job.job_id == 11
    assert await store.fail(job, worker="w", error="one") == JobState.QUEUED
    assert hooks.dead == []
    await clock.advance(1000)
    job = await store.claim(QUEUE, worker="w", lease_s=30)
    assert job is not None and job.job_id == 11 and job.attempts == 2
    assert await store.fail(job, worker="w", error="two" * 2000) == JobState.DEAD
    assert hooks.dead == [[11]]
    (dead,) = await store.listing(QUEUE, state=JobState.DEAD)
    assert dead.job_id == 11 and dead.last_error is not None and len(dead.last_error) == 2000
    nxt = await store.claim(QUEUE, worker="w", lease_s=30)
    assert nxt is not None and nxt.job_id == 12  # the dead one is not runnable
    assert await store.retry(QUEUE, [11, 12, 999]) == [11]  # 12 is running, 999 unknown
    assert hooks.retried == [[11]]
    again = await store.claim(QUEUE, worker="w", lease_s=30)
    assert again is not None and again.job_id == 11 and again.attempts == 1


async def test_retry_without_ids_requeues_every_dead_job(store: JobStore) -> None:
    for job_id in (21, 22):
        await add(store, job_id, attempts_max=1)
        job = await store.claim(QUEUE, worker="w", lease_s=30)
        assert job is not None
        assert await store.fail(job, worker="w", error="x") == JobState.DEAD
    assert sorted(await store.retry(QUEUE)) == [21, 22]
    assert (await store.statistics(QUEUE)).counts[JobState.QUEUED] == 2


async def test_a_deferral_does_not_spend_an_attempt(store: JobStore, clock: ManualClock) -> None:
    await add(store, 31, attempts_max=1)
    for _ in range(3):
        job = await store.claim(QUEUE, worker="w", lease_s=30)
        assert job is not None and job.attempts == 1
        assert await store.defer(job, worker="w", delay_s=5)
        assert await store.claim(QUEUE, worker="w", lease_s=30) is None
        await clock.advance(5)
    job = await store.claim(QUEUE, worker="w", lease_s=30)
    assert job is not None
    assert await store.fail(job, worker="w", error="x") == JobState.DEAD


async def test_statistics_and_listing_are_per_queue(store: JobStore, db: Database) -> None:
    await add(store, 41)
    await add(store, 42)
    async with db.transaction() as conn:  # a row of another queue
        await conn.execute(
            jobs.insert().values(
                job_id=43, queue="other", kind="x", subject_id=1, dedupe_key="1", priority=0,
                weight=0, state="queued", attempts=0, attempts_max=1, run_after_unix_s=0,
                created_unix_s=0, updated_unix_s=0,
            )
        )  # fmt: skip
    job = await store.claim(QUEUE, worker="w", lease_s=30)
    assert job is not None
    assert await store.finish(job, worker="w")
    stats = await store.statistics(QUEUE)
    assert stats.as_json() == {"queued": 1, "running": 0, "done": 1, "dead": 0}
    assert [j.job_id for j in await store.listing(QUEUE)] == [42, 41]
    assert [j.job_id for j in await store.listing(QUEUE, state=JobState.DONE)] == [41]
    assert [j.job_id for j in await store.listing(QUEUE, limit=1)] == [42]
