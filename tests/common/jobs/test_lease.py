"""Leased loops on SQLite and PostgreSQL: one holder at a time, renewal while a pass runs,
takeover after expiry (a manual clock), a pass cancelled when its lease is lost, release
on stop."""

from __future__ import annotations

import asyncio

from common.db import Database
from common.jobs import LeasedLoop, ManualClock
from common.jobs.lease import acquire, holders
from tests.common.jobs.conftest import until

LEASE_S = 20.0


async def test_one_holder_at_a_time_and_takeover_after_expiry(
    db: Database, clock: ManualClock
) -> None:
    now = clock.now()
    assert await acquire(db, "loop", "a", LEASE_S, now=now)
    assert not await acquire(db, "loop", "b", LEASE_S, now=now)
    assert await acquire(db, "loop", "a", LEASE_S, now=now + 5)  # still half a lease left
    assert (await holders(db))["loop"] == ("a", now + LEASE_S)
    assert await acquire(db, "loop", "a", LEASE_S, now=now + 15)  # renewed
    assert (await holders(db))["loop"] == ("a", now + 15 + LEASE_S)
    assert not await acquire(db, "loop", "b", LEASE_S, now=now + 15 + LEASE_S - 1)
    assert await acquire(db, "loop", "b", LEASE_S, now=now + 15 + LEASE_S + 1)
    assert not await acquire(db, "loop", "a", LEASE_S, now=now + 15 + LEASE_S + 2)


async def test_racing_processes_for_a_free_lease_exactly_one_wins(db: Database) -> None:
    won = await asyncio.gather(*(acquire(db, "race", f"h{i}", LEASE_S, now=1.0) for i in range(8)))
    assert sum(won) == 1


async def test_a_loop_renews_its_lease_while_a_long_pass_runs(
    db: Database, clock: ManualClock
) -> None:
    release = asyncio.Event()
    passes = 0

    async def one_pass() -> None:
        nonlocal passes
        await release.wait()
        passes += 1

    loop = LeasedLoop(db, "long", one_pass, holder="a", lease_s=LEASE_S, interval_s=1, clock=clock)
    task = asyncio.create_task(loop.pass_under_lease())
    for _ in range(8):  # 2 leases' worth of time
        await until(lambda: _sleeping(clock), what="the loop to wait for its renewal")
        await clock.advance(LEASE_S / 4)
        await asyncio.sleep(0.05)
        assert not await acquire(db, "long", "b", LEASE_S, now=clock.now())
    release.set()
    assert await asyncio.wait_for(task, 10)
    assert passes == 1 and loop.passes == 1


async def test_a_pass_is_cancelled_when_the_lease_is_lost(db: Database, clock: ManualClock) -> None:
    cancelled = asyncio.Event()

    async def one_pass() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = LeasedLoop(db, "lost", one_pass, holder="a", lease_s=LEASE_S, interval_s=1, clock=clock)
    task = asyncio.create_task(loop.pass_under_lease())
    await until(lambda: _sleeping(clock), what="the pass to start")
    async with db.transaction() as conn:  # another process took it (a stalled holder)
        await conn.exec_driver_sql("UPDATE job_leases SET holder = 'b' WHERE name = 'lost'")
    await until(lambda: _sleeping(clock), what="the loop to wait for its renewal")
    await clock.advance(LEASE_S / 4)  # the check finds another holder
    assert not await asyncio.wait_for(task, 10)
    assert cancelled.is_set() and loop.passes == 0


async def test_two_loops_never_overlap_and_stop_releases_the_lease(
    db: Database, clock: ManualClock
) -> None:
    log: list[tuple[str, float, float]] = []

    def pass_of(name: str) -> object:
        async def one_pass() -> None:
            await asyncio.sleep(0.01)

        return one_pass

    loops = [
        LeasedLoop(
            db,
            "shared",
            pass_of(name),  # type: ignore[arg-type]
            holder=name,
            lease_s=LEASE_S,
            interval_s=1,
            clock=clock,
            on_pass=lambda s, e, n=name: log.append((n, s, e)),  # type: ignore[misc]
            stop_s_max=1,
        )
        for name in ("a", "b")
    ]
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(loops[0].run(stop_a)), asyncio.create_task(loops[1].run(stop_b))]
    for _ in range(10):
        await until(lambda: _sleeping(clock, 2), what="both loops to wait")
        await clock.advance(1)
    first = {n for n, _, _ in log}
    assert len(first) == 1 and len(log) >= 5  # one holder ran every pass
    (holder,) = first
    stop_holder = stop_a if holder == "a" else stop_b
    stop_holder.set()
    await asyncio.wait_for(tasks[0 if holder == "a" else 1], 10)
    assert "shared" not in await holders(db)  # released at once, no expiry to wait for
    other = "b" if holder == "a" else "a"
    await until(lambda: _sleeping(clock, 1), what="the other loop to wait")
    await clock.advance(1)
    await until(lambda: _ran(log, other), what="the other loop to take over")
    (stop_b if holder == "a" else stop_a).set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def _sleeping(clock: ManualClock, n: int = 1) -> bool:
    return clock.sleepers >= n


async def _ran(log: list[tuple[str, float, float]], name: str) -> bool:
    return any(n == name for n, _, _ in log)
