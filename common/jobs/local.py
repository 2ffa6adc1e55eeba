"""Local jobs: long work inside one process (a compaction, a verify, a pull, an f4 rebuild),
with one handle, one way to cancel and one throttle.

`LocalJob` is the handle: its state, progress (done/total), bytes moved, result or error.
`LocalJob.cancel()` is the only way to stop a job, from any thread: it sets the job's cancel
event (and cancels the job's task when it runs on an event loop). Work observes the event
in one place, `Throttle.wait` / `Throttle.wait_async` (the throttle of a job always carries
the job's event), which raise `LocalJobCancelled`. Unthrottled work still calls the wait,
with a rate of None, so that a cancel is seen between steps.

Invariants: a job's state leaves RUNNING exactly once; `finished` is set after the result
or the error is recorded; a job whose work runs on a thread is not finished before that
thread has returned (`until_done` shields the thread's future from the task's cancel), so
whoever waits for `finished` may close the files the work used.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Final, TypeVar

from common.errors import PinholeError

log = logging.getLogger("pinhole.jobs")

T = TypeVar("T")

# A throttle that fell behind its rate catches up with at most this much banked budget.
THROTTLE_BURST_S: Final = 1.0

_job_ids = itertools.count(1)


class LocalJobCancelled(PinholeError):
    """The job was cancelled; raised inside its work at the next throttle wait."""

    status = 409
    code = "cancelled"


class LocalJobState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # a cancelled job is failed with error "cancelled"


class Throttle:
    """Holds work under `bytes_per_s` (None or 0: unthrottled) and is where the work sees a
    cancel. One throttle may be shared by several threads and by coroutines on a loop: the
    account of bytes is kept under a lock. Tests inject `clock` and `sleep` (the sleep is
    otherwise a wait on the cancel event, so a cancel cuts a sleep short)."""

    def __init__(
        self,
        bytes_per_s: float | None = None,
        *,
        cancelled: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if bytes_per_s is not None and bytes_per_s < 0:
            raise ValueError("bytes_per_s must not be negative")
        self.bytes_per_s = bytes_per_s or None
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        self._clock = clock
        self._sleep = sleep if sleep is not None else self.cancelled.wait
        self._lock = threading.Lock()
        self._t0 = clock()
        self._since_t0 = 0
        # Every byte passed through the throttle (throttled or not).
        self.bytes = 0

    def _delay(self, nbytes: int) -> float:
        """Seconds to wait before the next `nbytes`-step is within the rate."""
        with self._lock:
            self.bytes += nbytes
            rate = self.bytes_per_s
            if rate is None:
                return 0.0
            self._since_t0 += nbytes
            delay = self._t0 + self._since_t0 / rate - self._clock()
            if delay < -THROTTLE_BURST_S:
                self._t0 = self._clock()
                self._since_t0 = 0
            return max(0.0, delay)

    def check(self) -> None:
        """Raises LocalJobCancelled when the job was cancelled."""
        if self.cancelled.is_set():
            raise LocalJobCancelled("cancelled")

    def wait(self, nbytes: int = 0) -> None:
        """Accounts `nbytes` just moved and sleeps (on the calling thread) until the rate
        allows more; raises LocalJobCancelled on cancel."""
        self.check()
        delay = self._delay(nbytes)
        if delay > 0:
            self._sleep(delay)
        self.check()

    async def wait_async(self, nbytes: int = 0) -> None:
        """wait() for coroutines: sleeps on the loop."""
        self.check()
        delay = self._delay(nbytes)
        if delay > 0:
            await asyncio.sleep(delay)
        self.check()


class LocalJob:
    """One long node-local operation. Start its work with `start`; poll it, or wait for
    `finished`."""

    def __init__(self, kind: str, subject: int | str, *, clock: Callable[[], float] = time.time):
        self.id = next(_job_ids)
        self.kind = kind
        self.subject = subject
        self.state = LocalJobState.RUNNING
        self.done = 0
        self.total = 0
        self.started_unix_s = clock()
        self.finished_unix_s: float | None = None
        self.error: str | None = None
        self.result: dict[str, Any] | None = None
        self._clock = clock
        self._cancel = threading.Event()
        self._throttles: list[Throttle] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.finished = asyncio.Event()

    # -- what the work uses --------------------------------------------------------------------

    def throttle(self, bytes_per_s: float | None = None, **kwargs: Any) -> Throttle:
        """A throttle bound to this job's cancel (the work's one point of cancellation)."""
        t = Throttle(bytes_per_s, cancelled=self._cancel, **kwargs)
        self._throttles.append(t)
        return t

    def set_progress(self, done: int, total: int) -> None:
        """Progress from the work, from any thread."""
        self.done, self.total = done, total

    # -- the handle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state is LocalJobState.RUNNING

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self._throttles)

    @property
    def progress(self) -> float:
        """0..1; 1 once done."""
        if self.state is LocalJobState.DONE:
            return 1.0
        if not self.total:
            return 0.0
        return min(1.0, self.done / self.total)

    def cancel(self) -> None:
        """Asks the job to stop, from any thread. Its work raises LocalJobCancelled at its
        next throttle wait; a job running on a loop also has its task cancelled (which waits
        for work on a thread, see `until_done`)."""
        self._cancel.set()
        task, loop = self._task, self._loop
        if task is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    def start(self, work: Awaitable[dict[str, Any]]) -> None:
        """Runs `work` as a task of the running loop; its value becomes the result."""
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(work))
        if self._cancel.is_set():
            self._task.cancel()

    async def _run(self, work: Awaitable[dict[str, Any]]) -> None:
        try:
            result = await work
        except (LocalJobCancelled, asyncio.CancelledError):
            self._finish(LocalJobState.FAILED, error="cancelled")
        except Exception as e:
            self._finish(LocalJobState.FAILED, error=f"{e.__class__.__name__}: {e}")
            log.warning("%s %s failed: %s", self.kind, self.subject, self.error)
        else:
            self._finish(LocalJobState.DONE, result=result)

    def _finish(
        self,
        state: LocalJobState,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        self.result, self.error = result, error
        self.finished_unix_s = self._clock()
        self.state = state
        self.finished.set()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "state": self.state.value,
            "progress": round(self.progress, 4),
            "done": self.done,
            "total": self.total,
            "bytes": self.bytes,
            "started_unix_s": self.started_unix_s,
            "finished_unix_s": self.finished_unix_s,
            "result": self.result,
            "error": self.error,
        }


async def until_done(work: Awaitable[T]) -> T:
    """Awaits `work` (typically a thread's future); when the caller is cancelled meanwhile,
    first waits for the work to end (a thread cannot be interrupted, only asked to stop
    through its throttle), then re-raises the cancel."""
    fut = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        raise
