"""LocalJob and Throttle (common/jobs/local.py): the rate, the cancel, the progress."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from common.jobs.local import (
    THROTTLE_BURST_S,
    LocalJob,
    LocalJobCancelled,
    LocalJobState,
    Throttle,
    until_done,
)


class FakeTime:
    """A clock that moves only when the throttle sleeps (the work itself takes no time)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_the_throttle_holds_its_rate_over_a_window() -> None:
    t = FakeTime()
    throttle = Throttle(1_000_000, clock=t.clock, sleep=t.sleep)
    for _ in range(100):
        throttle.wait(50_000)
    # 5 MB at 1 MB/s: five seconds, to the rounding of the float arithmetic.
    assert t.now - 100.0 == pytest.approx(5.0)
    assert len(t.sleeps) == 100 and throttle.bytes == 5_000_000


def test_the_throttle_banks_at_most_its_burst_after_idling() -> None:
    t = FakeTime()
    throttle = Throttle(1_000_000, clock=t.clock, sleep=t.sleep)
    throttle.wait(1_000_000)
    t.now += 60.0  # a minute without work
    throttle.wait(1)  # notices it is far behind: the budget restarts from now
    start = t.now
    for _ in range(30):
        throttle.wait(100_000)
    # 3 MB after the restart: at least 3 s minus the first step, not a free minute's worth.
    assert t.now - start >= 3.0 - THROTTLE_BURST_S


@pytest.mark.parametrize("rate", [None, 0])
def test_an_unthrottled_throttle_never_sleeps_but_sees_a_cancel(rate: float | None) -> None:
    t = FakeTime()
    job = LocalJob("verify", 1)
    throttle = job.throttle(rate, clock=t.clock, sleep=t.sleep)
    for _ in range(1000):
        throttle.wait(1_000_000)
    assert t.sleeps == [] and job.bytes == 1_000_000_000
    job.cancel()
    with pytest.raises(LocalJobCancelled):
        throttle.wait(1)


def test_a_cancel_from_another_thread_cuts_a_throttle_sleep_short() -> None:
    job = LocalJob("compact", 7)
    throttle = job.throttle(1_000)  # 1 KB/s: a 1 MB step would sleep for 1000 s
    outcome: list[BaseException] = []
    started = threading.Event()

    def work() -> None:
        started.set()
        try:
            throttle.wait(1_000_000)
        except LocalJobCancelled as e:
            outcome.append(e)

    worker = threading.Thread(target=work)
    t0 = time.monotonic()
    worker.start()
    started.wait()
    threading.Thread(target=job.cancel).start()
    worker.join(timeout=10)
    assert not worker.is_alive() and len(outcome) == 1
    assert time.monotonic() - t0 < 10
    assert job.cancel_requested


async def test_wait_async_holds_the_rate_on_the_loop() -> None:
    throttle = Throttle(1_000_000)
    t0 = time.monotonic()
    for _ in range(10):
        await throttle.wait_async(30_000)
    # 300 KB at 1 MB/s: sleeping can only make it slower, so a lower bound is sound.
    assert time.monotonic() - t0 >= 0.3 - 0.03


def test_progress_and_json() -> None:
    job = LocalJob("pull", 3)
    assert job.progress == 0.0 and job.running
    job.set_progress(25, 100)
    assert job.progress == 0.25
    job.set_progress(120, 100)
    assert job.progress == 1.0
    doc = job.to_json()
    assert (doc["kind"], doc["subject"], doc["state"], doc["done"], doc["total"]) == (
        "pull",
        3,
        "running",
        120,
        100,
    )
    assert doc["finished_unix_s"] is None and doc["error"] is None


async def test_a_job_records_its_result_or_its_error() -> None:
    async def ok() -> dict[str, int]:
        return {"answer": 42}

    async def broken() -> dict[str, int]:
        raise OSError("disk on fire")

    good, bad = LocalJob("verify", 1), LocalJob("verify", 2)
    good.start(ok())
    bad.start(broken())
    await asyncio.wait_for(asyncio.gather(good.finished.wait(), bad.finished.wait()), 5)
    assert (good.state, good.result, good.progress) == (LocalJobState.DONE, {"answer": 42}, 1.0)
    assert bad.state is LocalJobState.FAILED and bad.error == "OSError: disk on fire"
    assert good.finished_unix_s is not None and bad.finished_unix_s is not None


async def test_cancelling_a_job_on_a_thread_finishes_it_only_once_the_thread_returned() -> None:
    job = LocalJob("scrub", 4)
    throttle = job.throttle(1_000)
    returned = threading.Event()
    entered = threading.Event()

    def work() -> dict[str, int]:
        entered.set()
        try:
            while True:
                throttle.wait(1_000_000)
        finally:
            time.sleep(0.05)  # the thread still holds its files for a moment
            returned.set()

    loop = asyncio.get_running_loop()
    job.start(until_done(loop.run_in_executor(None, work)))
    await loop.run_in_executor(None, entered.wait)
    # From another thread, as an operator's request or a shutdown would.
    await loop.run_in_executor(None, job.cancel)
    await asyncio.wait_for(job.finished.wait(), 10)
    assert returned.is_set()
    assert (job.state, job.error) == (LocalJobState.FAILED, "cancelled")


async def test_cancelling_a_job_on_the_loop_stops_its_task() -> None:
    job = LocalJob("pull", 5)
    never = asyncio.Event()

    async def work() -> dict[str, int]:
        await never.wait()
        return {}

    job.start(work())
    await asyncio.sleep(0)
    job.cancel()
    await asyncio.wait_for(job.finished.wait(), 5)
    assert (job.state, job.error) == (LocalJobState.FAILED, "cancelled")
