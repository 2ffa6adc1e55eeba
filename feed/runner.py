"""Runs the fan-out jobs: a loop in every API process (jobs are leased, so several
processes share the queue), on the job framework's runner (common/jobs/runner.py).
`drain()` runs every runnable job now (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import os
import socket

from common.jobs import Clock, Defer, JobLease, JobRunner, JobStore
from feed import jobs
from feed.service import Feed


class FanoutRunner:
    def __init__(self, feed: Feed, *, name: str | None = None, clock: Clock | None = None) -> None:
        self.feed = feed
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        config = feed.config
        self.runner = JobRunner(
            JobStore(feed.db, clock=clock),
            dict.fromkeys(jobs.KINDS, self._run),
            queues=[jobs.QUEUE],
            worker=self.name,
            lease_s=config.lease_s,
            policies=dict.fromkeys(jobs.KINDS, jobs.retry_policy(config)),
        )

    @property
    def ran(self) -> int:
        return self.runner.statistics.done

    @property
    def failed(self) -> int:
        return self.runner.statistics.failed

    async def _run(self, lease: JobLease) -> Defer | None:
        delay = await self.feed.run_job(lease.job)
        return None if delay is None else Defer(delay)

    async def run_once(self) -> bool:
        """Claims and runs one job; False when none was runnable."""
        return await self.runner.run_once()

    async def drain(self, *, max_jobs: int = 1_000_000) -> int:
        """Runs runnable jobs until none is left; returns how many ran."""
        return await self.runner.drain(max_jobs=max_jobs)

    async def run(self, stop: asyncio.Event) -> None:
        """Runs jobs until `stop` is set, looking every poll_interval_s or at once when the
        feed's wake event is set (a post was just made)."""
        await self.runner.run(stop, idle_s=self.feed.config.poll_interval_s, wake=self.feed.wake)
