"""`LeasedLoop`: a periodic pass that one process among many runs at a time.

The loop's lease is a row of `job_leases` (name, holder, expires). `acquire` takes a free
or expired lease, or renews one this holder has; it reads first and takes the write lock
only when it may change something (most calls are a holder with time left, or a process
that does not hold the lease), and decides again under the lock, so two processes racing
for a lease serialize and exactly one wins. While a pass runs the lease is renewed every
lease_s / 4; a process that loses it cancels its pass (passes must be idempotent: one cut
short leaves nothing to clean up). Expiry uses each process's clock: hosts sharing a lease
need synchronized clocks (NTP) with skew well under lease_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import sqlalchemy as sa

from common.db import Database
from common.jobs.clock import Clock, SystemClock
from common.jobs.runner import first_of
from common.jobs.schema import leases

LOCK: Final = "job_leases"
STOP_S_MAX_DEFAULT: Final = 5.0
RENEWALS_PER_LEASE: Final = 4

log = logging.getLogger("pinhole.jobs")


async def acquire(db: Database, name: str, holder: str, lease_s: float, *, now: float) -> bool:
    """True when `holder` holds the lease `name` for at least the next lease_s / 2 seconds
    (renewed to lease_s when less remains)."""
    t = leases.c
    async with db.snapshot() as conn:
        seen = (await conn.execute(sa.select(leases).where(t.name == name))).first()
    if seen is not None and seen.expires_unix_s > now:
        if seen.holder != holder:
            return False
        if seen.expires_unix_s - now > lease_s / 2:
            return True
    async with db.transaction(lock=LOCK) as conn:
        row = (await conn.execute(sa.select(leases).where(t.name == name))).first()
        if row is None:
            await conn.execute(
                leases.insert().values(name=name, holder=holder, expires_unix_s=now + lease_s)
            )
            return True
        if row.holder != holder and row.expires_unix_s > now:
            return False
        await conn.execute(
            leases.update()
            .where(t.name == name)
            .values(holder=holder, expires_unix_s=now + lease_s)
        )
        return True


async def release(db: Database, name: str, holder: str) -> None:
    """Gives the lease up at once (a clean shutdown), if `holder` holds it."""
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))


async def holders(db: Database) -> dict[str, tuple[str, float]]:
    """lease name -> (holder, expires_unix_s)."""
    async with db.snapshot() as conn:
        rows = await conn.execute(sa.select(leases))
        return {r.name: (r.holder, float(r.expires_unix_s)) for r in rows}


class LeasedLoop:
    """Runs `one_pass` every interval_s while this process holds the lease `name`.
    `on_pass(started, finished)` (time.monotonic()) follows every pass that ran to its end."""

    def __init__(
        self,
        db: Database,
        name: str,
        one_pass: Callable[[], Awaitable[None]],
        *,
        holder: str,
        lease_s: float,
        interval_s: float,
        clock: Clock | None = None,
        on_pass: Callable[[float, float], None] | None = None,
        stop_s_max: float = STOP_S_MAX_DEFAULT,
    ) -> None:
        self.db = db
        self.name = name
        self.one_pass = one_pass
        self.holder = holder
        self.lease_s = lease_s
        self.interval_s = interval_s
        self.clock: Clock = clock or SystemClock()
        self.on_pass = on_pass
        self.stop_s_max = stop_s_max
        self.passes = 0

    async def acquire(self) -> bool:
        return await acquire(self.db, self.name, self.holder, self.lease_s, now=self.clock.now())

    async def release(self) -> None:
        await release(self.db, self.name, self.holder)

    async def pass_under_lease(self) -> bool:
        """Runs one pass if this process holds (or takes) the lease, renewing it meanwhile;
        True when the pass ran to its end."""
        if not await self.acquire():
            return False
        started = time.monotonic()
        task: asyncio.Future[None] = asyncio.ensure_future(self.one_pass())
        try:
            while True:
                renew_in = asyncio.ensure_future(
                    self.clock.sleep(self.lease_s / RENEWALS_PER_LEASE)
                )
                try:
                    await asyncio.wait({task, renew_in}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    renew_in.cancel()
                if task.done():
                    task.result()
                    self.passes += 1
                    if self.on_pass is not None:
                        self.on_pass(started, time.monotonic())
                    return True
                if not await self.acquire():
                    log.warning("lost the %s lease during a pass; stopping it", self.name)
                    return False
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run(self, stop: asyncio.Event) -> None:
        """Passes every interval_s until `stop` is set; the pass in hand then gets
        stop_s_max to end before it is cancelled, and the lease is released."""
        task: asyncio.Future[bool] | None = None
        try:
            while not stop.is_set():
                task = asyncio.ensure_future(self.pass_under_lease())
                await first_of(asyncio.shield(task), stop.wait())
                if not task.done():
                    await asyncio.wait({task}, timeout=self.stop_s_max)
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await task
                    except Exception:
                        log.exception("%s pass failed", self.name)
                if stop.is_set():
                    break
                await first_of(stop.wait(), self.clock.sleep(self.interval_s))
        finally:
            if task is not None and not task.done():  # run() itself was cancelled
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await asyncio.shield(self.release())
