"""Threads for the reads that must wait for the device, with batched completions.

concurrent.futures + run_in_executor wake the event loop once per finished read (a write to
its self-pipe and a callback each). Under load many reads finish between two turns of the
loop, so this pool queues finished reads and wakes the loop once per batch; submission is a
lock-free SimpleQueue put. The number of threads is the node's disk queue depth.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = None
_Job = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class ReadPool:
    def __init__(self, threads: int, *, name: str = "store-read") -> None:
        if threads < 1:
            raise ValueError("threads must be positive")
        self._jobs: queue.SimpleQueue[
            tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self._started = False

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Runs fn(*args) on a pool thread; the future resolves on the calling loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if not self._started:
            self._started = True
            for t in self._threads:
                t.start()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        jobs = self._jobs
        done = self._done
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            fut, fn, args = job
            try:
                item = (fut, True, fn(*args))
            except BaseException as e:
                item = (fut, False, e)
            done.append(item)
            if not self._wake_pending:
                self._wake_pending = True
                loop = self._loop
                assert loop is not None
                try:
                    loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _drain(self) -> None:
        # Clear the flag before draining: a read finishing during the drain either is
        # drained now or schedules another drain.
        self._wake_pending = False
        done = self._done
        while done:
            fut, ok, value = done.popleft()
            if fut.cancelled():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def shutdown(self) -> None:
        """Lets queued reads finish, then stops the threads."""
        if not self._started:
            return
        for _ in self._threads:
            self._jobs.put(_STOP)
        for t in self._threads:
            t.join()
