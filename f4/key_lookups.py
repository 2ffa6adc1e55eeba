"""Key store reads for an event loop, batched on one thread.

A read on the name node needs its blob's key; the key store (SQLite) may wait for its
disk or for a delete's purge, so it is never asked on the event loop. Handing every
lookup to a thread pool costs a thread wake-up and a loop wake-up per read (measured:
more CPU than the rest of the name node's read; ARCHITECTURE.md). Here one thread takes
every lookup queued since it last woke, reads them all under one lock
(KeyStore.get_many), and answers them with one loop wake-up: under load a wake-up serves
several reads, and an idle name node pays what a pool would. The keys of one batch of
read tickets (POST /tickets) are asked for together (`get_many`): one queue entry, so one
wake-up for all of them.

Invariant: the key store stays the one source of truth: nothing is cached, so a key
deleted by any process is absent for every lookup that starts after the delete
committed.
"""

from __future__ import annotations

import asyncio
import threading
from queue import SimpleQueue
from typing import Any, Final

from f4.blob import BlobId, BlobKey
from f4.keystore import KeyStore

# At most this many queue entries (a lookup, or the lookups of one get_many) are read in
# one batch (one hold of the key store's lock).
BATCH_MAX: Final = 256

# One blob's lookup (its future gets BlobKey | None) or several (a list of them, in order).
_Waiter = tuple[BlobId | tuple[BlobId, ...], "asyncio.Future[Any]"]
_STOP: Final = None


class KeyLookups:
    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys
        self._queue: SimpleQueue[_Waiter | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.lookups = 0

    def get(self, blob: BlobId) -> asyncio.Future[BlobKey | None]:
        """The blob's key, or None when it has none (never had, or deleted)."""
        loop = self._started()
        future: asyncio.Future[BlobKey | None] = loop.create_future()
        self._queue.put((blob, future))
        return future

    def get_many(self, blobs: tuple[BlobId, ...]) -> asyncio.Future[list[BlobKey | None]]:
        """The blobs' keys in order (None for each that has none), in one wake-up."""
        loop = self._started()
        future: asyncio.Future[list[BlobKey | None]] = loop.create_future()
        self._queue.put((blobs, future))
        return future

    def _started(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._loop = loop
            self._thread = threading.Thread(target=self._run, name="f4-keys", daemon=True)
            self._thread.start()
        elif loop is not self._loop:
            raise RuntimeError("KeyLookups serves one event loop")
        return loop

    def close(self) -> None:
        """Stops the thread after the lookups already queued."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is _STOP:
                    self._queue.put(_STOP)  # after this batch
                    break
                batch.append(more)
            wanted: list[BlobId] = []
            for blob, _ in batch:
                if isinstance(blob, BlobId):
                    wanted.append(blob)
                else:
                    wanted.extend(blob)
            try:
                found = self._keys.get_many(wanted)
            except Exception as e:  # every waiter learns why
                failure: Exception | None = e
                found = {}
            else:
                failure = None
            self.batches += 1
            self.lookups += len(wanted)
            try:
                loop.call_soon_threadsafe(_answer, batch, found, failure)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


def _answer(batch: list[_Waiter], found: dict[BlobId, BlobKey], failure: Exception | None) -> None:
    for blob, future in batch:
        if future.done():  # the reader went away
            continue
        if failure is not None:
            future.set_exception(failure)
        elif isinstance(blob, BlobId):
            future.set_result(found.get(blob))
        else:
            future.set_result([found.get(b) for b in blob])
