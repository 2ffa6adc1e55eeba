"""`JobRunner`: claims the jobs of its queues and runs them with their kinds' handlers.

- One job at a time per runner; several runners (processes) share a queue through leases.
- While a handler runs, the lease is renewed every lease_s / 3 (the runner's clock); when a
  renewal finds the lease gone (another worker took the job over), the handler is cancelled
  and the job left to its new owner.
- A handler returns None (the runner marks the job done, unless the handler already did
  inside its own transaction through `JobLease.finish_in`), or `Defer(delay_s)`; an
  exception is a failed attempt (`JobStore.fail`, with the runner's retry policy of the
  kind when it has one, else the kind's own).
- `run(stop)` ends after the job in hand: it waits at most stop_s_max for it, then cancels
  it. Cancelling inside a SQLite transaction leaves the connection to the driver's forced
  close, which can stall teardown, hence the bounded wait before the cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from common.jobs.errors import LeaseLost
from common.jobs.job import Job
from common.jobs.kind import RetryPolicy
from common.jobs.queue import JobStore

log = logging.getLogger("pinhole.jobs")

STOP_S_MAX_DEFAULT: Final = 10.0
RENEWALS_PER_LEASE: Final = 3


@dataclass(frozen=True, slots=True)
class Defer:
    """The job waits for something (not a failure): run it again after delay_s."""

    delay_s: float


class JobLease:
    """A claimed job as its handler sees it."""

    def __init__(self, store: JobStore, job: Job, worker: str) -> None:
        self.store = store
        self.job = job
        self.worker = worker
        self.finished = False

    async def finish_in(self, conn: AsyncConnection) -> None:
        """Marks the job done inside the handler's own transaction (the one that commits
        its effect); raises LeaseLost, rolling that transaction back, when the job is no
        longer this worker's."""
        if not await self.store.finish_in(conn, self.job, worker=self.worker):
            raise LeaseLost(f"job {self.job.job_id}")
        self.finished = True


Handler = Callable[[JobLease], Awaitable[Defer | None]]


@dataclass(slots=True)
class RunnerStatistics:
    done: int = 0
    failed: int = 0
    deferred: int = 0
    lost: int = 0


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        handlers: Mapping[str, Handler],
        *,
        queues: Sequence[str],
        worker: str,
        lease_s: float,
        policies: Mapping[str, RetryPolicy] | None = None,
        after_job: Callable[[Job], Awaitable[None]] | None = None,
        stop_s_max: float = STOP_S_MAX_DEFAULT,
    ) -> None:
        """`handlers` and `policies` by kind name; `after_job` runs once a job is over
        (its lease no longer held), whatever its outcome."""
        self.store = store
        self.handlers = dict(handlers)
        self.queues = list(queues)
        self.worker = worker
        self.lease_s = lease_s
        self.policies = dict(policies or {})
        self.after_job = after_job
        self.stop_s_max = stop_s_max
        self.statistics = RunnerStatistics()

    async def run_once(self) -> bool:
        """Claims and runs one job; False when no queue had a runnable one."""
        for queue in self.queues:
            job = await self.store.claim(queue, worker=self.worker, lease_s=self.lease_s)
            if job is not None:
                await self.run_job(job)
                return True
        return False

    async def drain(self, *, max_jobs: int = 1_000_000) -> int:
        """Runs runnable jobs until none is left (or max_jobs ran); how many ran."""
        ran = 0
        while ran < max_jobs and await self.run_once():
            ran += 1
        return ran

    async def run_job(self, job: Job) -> None:
        lease = JobLease(self.store, job, self.worker)
        renewing: asyncio.Future[Any] = asyncio.ensure_future(self._renew(job))
        work: asyncio.Future[Any] = asyncio.ensure_future(self.handlers[job.kind](lease))
        try:
            done, _ = await asyncio.wait({renewing, work}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:  # the lease is lost: abandon the work
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                self.statistics.lost += 1
                log.warning("job %d (%s): lease lost, abandoned", job.job_id, job.kind)
                return
            outcome = work.result()
            if isinstance(outcome, Defer):
                await self.store.defer(job, worker=self.worker, delay_s=outcome.delay_s)
                self.statistics.deferred += 1
                return
            if not lease.finished:
                await self.store.finish(job, worker=self.worker)
            self.statistics.done += 1
            log.info("job %d (%s) done, attempt %d", job.job_id, job.kind, job.attempts)
        except LeaseLost:
            self.statistics.lost += 1
            log.warning("job %d (%s): lease lost before it finished", job.job_id, job.kind)
        except Exception as e:
            self.statistics.failed += 1
            reason = f"{type(e).__name__}: {e}"
            state = await self.store.fail(
                job, worker=self.worker, error=reason, policy=self.policies.get(job.kind)
            )
            log.warning(
                "job %d (%s) attempt %d failed, now %s: %s",
                job.job_id,
                job.kind,
                job.attempts,
                state,
                reason,
            )
        finally:
            # Cancelled itself (a stop past its bound): the handler goes too.
            for task in (work, renewing):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await renewing
            if self.after_job is not None:
                try:
                    await self.after_job(job)
                except Exception:
                    log.exception("after job %d", job.job_id)

    async def _renew(self, job: Job) -> None:
        while True:
            await self.store.clock.sleep(self.lease_s / RENEWALS_PER_LEASE)
            if not await self.store.renew(job, worker=self.worker, lease_s=self.lease_s):
                raise LeaseLost(f"job {job.job_id}")

    async def run(
        self,
        stop: asyncio.Event,
        *,
        idle_s: float,
        idle_s_max: float | None = None,
        wake: asyncio.Event | None = None,
        between_jobs: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Runs jobs until `stop` is set. Idle, it looks again after idle_s, growing by half
        each empty look up to idle_s_max (default idle_s), or at once when `wake` is set.
        `between_jobs` runs before each look (its failures are logged)."""
        idle_s_max = idle_s if idle_s_max is None else idle_s_max
        wait_s = idle_s
        while not stop.is_set():
            if between_jobs is not None:
                try:
                    await between_jobs()
                except Exception:
                    log.exception("between jobs")
            if wake is not None:
                wake.clear()
            try:
                busy = await self._until_stopped(self.run_once(), stop)
            except Exception:
                log.exception("job runner pass failed")
                busy = False
            if busy:
                wait_s = idle_s
                continue
            waits = [stop.wait(), self.store.clock.sleep(wait_s)]
            if wake is not None:
                waits.append(wake.wait())
            await first_of(*waits)
            wait_s = min(wait_s * 1.5, idle_s_max)

    async def _until_stopped(self, one: Awaitable[bool], stop: asyncio.Event) -> bool:
        """Runs `one`; once `stop` is set, gives it stop_s_max more, then cancels it."""
        task = asyncio.ensure_future(one)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=self.stop_s_max)
            if not task.done():
                log.warning("job still running %.1f s after stop: cancelled", self.stop_s_max)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return False
            return task.result()
        finally:
            stopping.cancel()
            if not task.done():  # run() itself was cancelled: the job in hand goes too
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def first_of(*waits: Awaitable[object]) -> None:
    """Returns when the first of `waits` has; cancels the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
