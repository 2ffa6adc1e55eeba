"""Runs the fan-out jobs: a loop in every API process (jobs are leased, so several
processes share the queue). `drain()` runs every runnable job now (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from feed import jobs
from feed.service import Feed

log = logging.getLogger("pinhole.feed")


class FanoutRunner:
    def __init__(self, feed: Feed, *, name: str | None = None) -> None:
        self.feed = feed
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.ran = 0
        self.failed = 0

    async def run_once(self) -> bool:
        """Claims and runs one job; False when none was runnable."""
        config = self.feed.config
        job = await jobs.claim(self.feed.db, worker=self.name, lease_s=config.lease_s)
        if job is None:
            return False
        try:
            delay = await self.feed.run_job(job)
        except Exception as e:
            self.failed += 1
            state = await jobs.fail(
                self.feed.db,
                job,
                worker=self.name,
                error=f"{type(e).__name__}: {e}",
                attempts_max=config.attempts_max,
                backoff_s_base=config.backoff_s_base,
                backoff_s_max=config.backoff_s_max,
            )
            log.warning("feed job %s (%s) failed, now %s: %s", job.job_id, job.kind, state, e)
            return True
        if delay is not None:
            await jobs.defer(self.feed.db, job, worker=self.name, delay_s=delay)
        else:
            await jobs.finish(self.feed.db, job, worker=self.name)
            self.ran += 1
        return True

    async def drain(self, *, max_jobs: int = 1_000_000) -> int:
        """Runs runnable jobs until none is left; returns how many ran."""
        n = 0
        while n < max_jobs and await self.run_once():
            n += 1
        return n

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except Exception:
                log.exception("feed runner pass failed")
                busy = False
            if busy:
                continue
            self.feed.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    _first(self.feed.wake, stop), timeout=self.feed.config.poll_interval_s
                )


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
