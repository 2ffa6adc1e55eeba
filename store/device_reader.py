"""Reads that must wait for the device, without a thread per read where the kernel allows.

A page-cache miss on a thread pool costs several context switches per read (wake a
thread, hand over the GIL, wake the loop): on this kind of virtual machine that, not the
disk, bounded cold reads. With io_uring (through caio, a maintained binding) the event
loop submits the read and an eventfd tells it when the data is there: no thread at all,
and the kernel completes page-cache hits inline. Where io_uring is not available (an old
kernel, a sandbox that forbids it) or the file is not a real file, reads go to
store/read_pool.py's threads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from store.read_pool import ReadPool
from store.storage import VolumeFile

log = logging.getLogger("pinhole.store")


def _uring_context_class() -> Any:
    try:
        from caio import linux_uring_asyncio
    except ImportError:
        return None
    return linux_uring_asyncio.AsyncioContext


class DeviceReader:
    """`queue_depth` reads in flight at most (io_uring entries, or threads)."""

    def __init__(self, queue_depth: int, *, use_uring: bool = True) -> None:
        self.queue_depth = queue_depth
        self._pool = ReadPool(queue_depth)
        self._uring_class = _uring_context_class() if use_uring else None
        self._uring: Any = None
        self.backend = "io_uring" if self._uring_class is not None else "threads"

    def _context(self) -> Any:
        if self._uring is None and self._uring_class is not None:
            try:
                self._uring = self._uring_class(
                    max_requests=self.queue_depth,
                    loop=asyncio.get_running_loop(),
                    deferred=True,
                    # A polling kernel thread would burn a core of a small machine.
                    sqpoll=False,
                )
            except OSError as e:  # e.g. io_uring_setup forbidden
                log.warning("io_uring unavailable (%s): device reads use threads", e)
                self._uring_class = None
                self.backend = "threads"
        return self._uring

    async def read(self, file: VolumeFile, length: int, offset: int) -> bytes:
        fd = getattr(file, "fd", None)
        ctx = self._context() if isinstance(fd, int) else None
        if ctx is None:
            return await self._pool.submit(file.read, length, offset)
        data: bytes = await ctx.read(length, fd, offset)
        if len(data) < length:
            # A short read is the end of the file or an interrupted read: finish it the
            # plain way rather than guess.
            data += await self._pool.submit(file.read, length - len(data), offset + len(data))
        return data

    def close(self) -> None:
        if self._uring is not None:
            self._uring.close()
            self._uring = None
        self._pool.shutdown()
