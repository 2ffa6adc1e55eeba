"""A stripe's blocks written at the same time: block i of every stripe is written and
committed on lane i, a thread of its own, so the 14 uploads of a stripe (HTTP requests to
storage nodes, or local writes and fsyncs) wait on their nodes together instead of one
after another, while the caller builds the next window (f4.encoder).

Invariants:
- A lane runs its tasks one at a time in the order they were given, so a block's windows
  reach its writer in order, its commit (ChecksummedWriter: sidecar first, then the block)
  goes with its last window, and no writer is ever used by two threads.
- A block whose write failed takes no further window and is never committed: its later
  tasks raise that failure (a window sent after a lost one would land at its offset).
- A window passed to `StripeUpload.write` is the caller's again only once the futures
  returned have completed (the BlockWriter protocol: a write is done with its bytes when
  it returns).
- On any failure the caller calls `Lanes.abandon`: nothing not yet started runs, what is
  running finishes, and every block not committed is aborted on its own lane before
  `abandon` returns; a block whose commit ran stays (it is complete, as any object that
  exists is, and holds the bytes a resumed run would write).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Final, Protocol, TypeVar

from f4.block_store import Buffer
from f4.erasure import STRIPE_BLOCKS

T = TypeVar("T")

LANES: Final = STRIPE_BLOCKS  # threads writing blocks: one per block of a stripe


class BlockUpload(Protocol):
    """What a lane drives: encoder.ChecksummedWriter."""

    def write(self, data: Buffer) -> None: ...

    def commit_with(self, data: Buffer) -> None:
        """Writes the last piece and commits."""

    def abort(self) -> None: ...


class Lanes:
    """LANES single-thread executors; also remembers what was given to them and not yet
    finished, so that `abandon` can stop it."""

    def __init__(self, count: int = LANES) -> None:
        self._lanes = [
            ThreadPoolExecutor(1, thread_name_prefix=f"f4-lane-{i}") for i in range(count)
        ]
        self._pending: list[Future[Any]] = []
        self._uploads: list[StripeUpload] = []

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, lane: int, fn: Callable[..., T], *args: object) -> Future[T]:
        future = self._lanes[lane].submit(fn, *args)
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(future)
        return future

    def track(self, upload: StripeUpload) -> None:
        self._uploads = [u for u in self._uploads if not u.finished]
        self._uploads.append(upload)

    def abandon(self) -> None:
        """Cancels every task not started, lets the running ones finish, then aborts every
        upload not committed (each on its lane) and waits for that. Never raises for what
        the aborted work raised: the caller is already handling the first failure."""
        for f in self._pending:
            f.cancel()
        aborts = [f for u in self._uploads for f in u.abort_unfinished()]
        wait([*self._pending, *aborts])
        self._pending = []
        self._uploads = []

    def close(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=True)


def wait_all(futures: Iterable[Future[Any]]) -> None:
    """Returns when every future completed; raises the first failure (in the order given)
    as soon as there is one."""
    futures = list(futures)
    wait(futures, return_when=FIRST_EXCEPTION)
    for f in futures:
        if f.done():
            f.result()
    wait(futures)  # none failed: all are done


class StripeUpload:
    """The blocks of one stripe that `writers` names, each written and committed on its
    lane."""

    def __init__(self, lanes: Lanes, writers: Mapping[int, BlockUpload]) -> None:
        self.lanes = lanes
        self.blocks = sorted(writers)
        self._writers = dict(writers)
        self._done: set[int] = set()  # blocks whose commit or abort ran
        self._failed: dict[int, BaseException] = {}  # block -> its first failed write
        self.commits: dict[int, Future[None]] = {}  # block -> its last write and commit
        lanes.track(self)

    @property
    def finished(self) -> bool:
        return len(self._done) == len(self.blocks)

    def write(self, windows: Sequence[Buffer], *, last: bool) -> list[Future[None]]:
        """Starts writing windows[i] to each block i (and, when `last`, committing it: then
        `commits` holds the futures); the windows are the caller's again once every
        future returned has completed."""
        futures = [self.lanes.submit(i, self._write, i, windows[i], last) for i in self.blocks]
        if last:
            self.commits = dict(zip(self.blocks, futures, strict=True))
        return futures

    def _write(self, block: int, window: Buffer, last: bool) -> None:
        failed = self._failed.get(block)
        if failed is not None:
            # A block whose earlier write failed (perhaps with its bytes half sent) takes no
            # more, and is never committed: the caller sees that failure and aborts it.
            raise failed
        writer = self._writers[block]
        try:
            if not last:
                writer.write(window)
                return
            self._done.add(block)  # a commit that fails is not aborted after (as put_pieces)
            writer.commit_with(window)
        except BaseException as e:
            self._failed[block] = e
            raise

    def abort_unfinished(self) -> list[Future[None]]:
        return [self.lanes.submit(i, self._abort, i) for i in self.blocks if i not in self._done]

    def _abort(self, block: int) -> None:
        if block in self._done:
            return
        self._done.add(block)
        self._writers[block].abort()
