"""The runner on SQLite and PostgreSQL: handlers' outcomes, lease renewal while a handler
runs (driven by a manual clock), abandoning a job whose lease was lost, and stopping."""

from __future__ import annotations

import asyncio

import pytest

from common.jobs import (
    Defer,
    JobLease,
    JobRunner,
    JobState,
    JobStore,
    LeaseLost,
    ManualClock,
    RetryPolicy,
)
from tests.common.jobs.conftest import QUEUE, Hooks, until
from tests.common.jobs.test_queue import add

LEASE_S = 30.0


def runner(
    store: JobStore, handler: object, *, stop_s_max: float = 10.0, **kw: object
) -> JobRunner:
    return JobRunner(
        store,
        {"fast": handler, "slow": handler},  # type: ignore[dict-item]
        queues=[QUEUE],
        worker="w",
        lease_s=LEASE_S,
        stop_s_max=stop_s_max,
        **kw,  # type: ignore[arg-type]
    )


async def state_of(store: JobStore, job_id: int) -> JobState:
    (job,) = [j for j in await store.listing(QUEUE) if j.job_id == job_id]
    return job.state


async def test_outcomes_done_deferred_failed_and_finished_by_the_handler(
    store: JobStore, clock: ManualClock
) -> None:
    seen: list[int] = []

    async def handler(lease: JobLease) -> Defer | None:
        seen.append(lease.job.job_id)
        if lease.job.job_id == 2:
            return Defer(60)
        if lease.job.job_id == 3:
            raise ValueError("bad input")
        if lease.job.job_id == 4:
            async with store.db.transaction(lock="alpha_jobs") as conn:
                await lease.finish_in(conn)
        return None

    for job_id in (1, 2, 3, 4):
        await add(store, job_id, weight=job_id)
    run = runner(store, handler, policies={"fast": RetryPolicy(5, 1.0, 1.0)})
    assert await run.drain() == 4
    assert seen == [1, 2, 3, 4]
    assert [await state_of(store, i) for i in (1, 2, 3, 4)] == [
        JobState.DONE,
        JobState.QUEUED,
        JobState.QUEUED,
        JobState.DONE,
    ]
    (failed,) = [j for j in await store.listing(QUEUE) if j.job_id == 3]
    assert failed.last_error == "ValueError: bad input"
    # The runner's policy (1 s, +-20%), not the kind's (10 s).
    assert 0.8 <= failed.run_after_unix_s - clock.now() <= 1.2
    stats = run.statistics
    assert (stats.done, stats.deferred, stats.failed, stats.lost) == (2, 1, 1, 0)


async def test_the_lease_is_renewed_while_the_handler_runs(
    store: JobStore, clock: ManualClock
) -> None:
    release = asyncio.Event()

    async def handler(lease: JobLease) -> None:
        await release.wait()

    await add(store, 5)
    run = runner(store, handler)
    task = asyncio.create_task(run.run_once())
    await until(lambda: _running(store, 5), what="the job to be claimed")
    for _ in range(6):  # two whole leases of time, a third of a lease at a time
        expires = clock.now() + LEASE_S / 3 + LEASE_S  # what the next renewal sets
        await until(lambda: _sleepers(clock), what="the renewal to wait")
        await clock.advance(LEASE_S / 3)
        await until(
            lambda e=expires: _lease_after(store, 5, e),  # type: ignore[misc]
            what="the lease to be renewed",
        )
        assert await store.claim(QUEUE, worker="other", lease_s=LEASE_S) is None
    release.set()
    assert await task
    assert await state_of(store, 5) == JobState.DONE


async def test_a_job_whose_lease_was_taken_over_is_abandoned(
    store: JobStore, clock: ManualClock
) -> None:
    cancelled = asyncio.Event()

    async def handler(lease: JobLease) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await add(store, 6)
    run = runner(store, handler)
    task = asyncio.create_task(run.run_once())
    await until(lambda: _running(store, 6), what="the job to be claimed")
    # Another worker takes the job as if this one had stalled past its lease.
    async with store.db.transaction(lock="alpha_jobs") as conn:
        await conn.exec_driver_sql("UPDATE jobs SET lease_owner = 'other' WHERE job_id = 6")
    await until(lambda: _sleepers(clock), what="the renewal to wait")
    await clock.advance(LEASE_S / 3)
    assert await asyncio.wait_for(task, 10)
    assert cancelled.is_set() and run.statistics.lost == 1
    (job,) = await store.listing(QUEUE)
    assert job.state == JobState.RUNNING and job.lease_owner == "other"


async def test_finish_in_raises_when_the_lease_is_lost(store: JobStore) -> None:
    await add(store, 8)
    job = await store.claim(QUEUE, worker="w", lease_s=LEASE_S)
    assert job is not None
    lease = JobLease(store, job, "someone-else")
    with pytest.raises(LeaseLost):
        async with store.db.transaction(lock="alpha_jobs") as conn:
            await lease.finish_in(conn)
    assert await state_of(store, 8) == JobState.RUNNING


async def test_stop_lets_the_job_in_hand_end_within_the_bound(store: JobStore) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(lease: JobLease) -> None:
        started.set()
        await release.wait()

    await add(store, 9)
    run = runner(store, handler, stop_s_max=30)
    stop = asyncio.Event()
    task = asyncio.create_task(run.run(stop, idle_s=0.01))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.sleep(0)
    assert not task.done()  # it waits for the job in hand
    release.set()
    await asyncio.wait_for(task, 10)
    assert await state_of(store, 9) == JobState.DONE


async def test_stop_cancels_a_job_that_outlives_the_bound(store: JobStore) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(lease: JobLease) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await add(store, 10)
    run = runner(store, handler, stop_s_max=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(run.run(stop, idle_s=0.01))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert cancelled.is_set()
    # Left leased: another worker takes it when the lease runs out.
    assert await state_of(store, 10) == JobState.RUNNING


async def test_an_idle_runner_wakes_for_a_new_job(store: JobStore, hooks: Hooks) -> None:
    ran = asyncio.Event()

    async def handler(lease: JobLease) -> None:
        ran.set()

    run = runner(store, handler)
    stop, wake = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run.run(stop, idle_s=3600, wake=wake))  # the clock stands still
    await until(lambda: _sleepers(store.clock), what="the runner to idle")  # type: ignore[arg-type]
    await add(store, 11)
    wake.set()
    await asyncio.wait_for(ran.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)


async def _running(store: JobStore, job_id: int) -> bool:
    return any(
        j.job_id == job_id and j.state == JobState.RUNNING for j in await store.listing(QUEUE)
    )


async def _lease_after(store: JobStore, job_id: int, unix_s: float) -> bool:
    (job,) = [j for j in await store.listing(QUEUE) if j.job_id == job_id]
    return job.lease_expires_unix_s is not None and job.lease_expires_unix_s >= unix_s


async def _sleepers(clock: ManualClock) -> bool:
    return clock.sleepers > 0
