"""Hot read-only statements on SQLite, one thread hop per unit of work.

Through SQLAlchemy and aiosqlite a read snapshot with two statements costs about 1.5 ms of
CPU (pool checkout, BEGIN, per statement a compile-cache lookup and several thread hops,
ROLLBACK, reset on return); the feed's read budget is a fraction of that. `QuickReader`
runs a unit of plain SQL statements (`fn(sqlite3.Connection)`) on one reader thread that
holds its own read-only connection, inside one BEGIN ... COMMIT (one consistent view), in
one hop: about 0.12 ms for the same work (figures: ARCHITECTURE.md, "Quick reads"). Only
the few statements of the hottest paths use it; everything else stays on SQLAlchemy, and
PostgreSQL always does (its Database has no QuickReader).

`run_unit(fn)` runs a SQLAlchemy read unit the same way: `fn(conn)` is an async function
written for a snapshot's AsyncConnection whose only awaits are `conn.execute(...)` (the
batched reads of a page's hydration, social/post_batch.py `read_posts`); here it gets a
synchronous connection of its own on the reader thread, inside one BEGIN ... COMMIT, and
is driven to its end there without an event loop: the same statements and row handling,
one hop instead of several per statement. A unit that awaits anything else fails
(QuickUnitSuspended) rather than run half on the reader thread.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

# One thread: the statements are short and hold the GIL between SQLite calls, so more
# threads only contend for it (measured: 16 concurrent units cost 3x the CPU on 4 threads).
# Units reach it through a SimpleQueue and come back through call_soon_threadsafe: a hop
# costs about 10 us less CPU than run_in_executor's (concurrent.futures' work item, its
# condition variable and the chained futures), and a feed page makes four.
QUICK_READ_THREADS: Final = 1
# The reader's page cache, and how much of the file it maps instead of reading it with
# pread (a hot read then copies nothing): the feed's working set (follows, posts, users)
# stays in memory.
QUICK_READ_CACHE_BYTES: Final = 64 << 20
QUICK_READ_MMAP_BYTES: Final = 1 << 30


class QuickReader:
    def __init__(self, path: Path, *, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._units: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started at the first unit
        self._closed = False
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._sa_engine: sa.Engine | None = None

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA cache_size = -{QUICK_READ_CACHE_BYTES >> 10}")
            conn.execute(f"PRAGMA mmap_size = {QUICK_READ_MMAP_BYTES}")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _unit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    def _submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """`work()` on the reader thread; its result (or exception) in the returned future
        of the running loop."""
        if self._closed:
            raise RuntimeError("the quick reader is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="quickread_0", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._units.put((loop, future, work))
        return future

    def _serve(self) -> None:
        """The reader thread: units in the order given, until the None that close() puts.
        Nothing of a unit stays referenced while the thread waits for the next one (its
        result would outlive the request, survive collections into the oldest generation
        and so bring the next full collection sooner: a 45 ms pause measured)."""
        while (unit := self._units.get()) is not None:
            _serve_one(*unit)
            del unit

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs fn(connection) in one read transaction on the reader thread."""
        return await self._submit(lambda: self._unit(fn))

    def _engine(self) -> sa.Engine:
        """The reader thread's synchronous SQLAlchemy engine (made at first use), with the
        read-only connection settings of `_connection` and our own deferred BEGIN."""
        if self._sa_engine is None:
            engine = sa.create_engine(f"sqlite:///{self.path}", poolclass=sa.pool.StaticPool)

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
                dbapi_connection.isolation_level = None
                for pragma in (
                    f"busy_timeout = {int(self.busy_timeout_ms)}",
                    "query_only = ON",
                    f"cache_size = -{QUICK_READ_CACHE_BYTES >> 10}",
                    f"mmap_size = {QUICK_READ_MMAP_BYTES}",
                ):
                    dbapi_connection.execute(f"PRAGMA {pragma}")

            @event.listens_for(engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                conn.exec_driver_sql("BEGIN")

            self._sa_engine = engine
        return self._sa_engine

    def _sa_unit(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        with self._engine().connect() as conn, conn.begin():
            return drive_unit(conn, fn)

    async def run_unit(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Runs the SQLAlchemy read unit fn(conn) on the reader thread (module docstring)."""
        return await self._submit(lambda: self._sa_unit(fn))

    def _close_all(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        if self._sa_engine is not None:
            self._sa_engine.dispose()
            self._sa_engine = None

    async def close(self) -> None:
        """Closes the connections on the reader thread, which then ends; idempotent."""
        if self._closed:
            return
        if self._thread is not None:
            await self._submit(self._close_all)
            self._units.put(None)
        self._closed = True


_Unit = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _serve_one(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], work: Callable[[], Any]
) -> None:
    """Runs one unit on the reader thread; its outcome goes to its loop."""
    try:
        result, error = work(), None
    except BaseException as e:  # the caller gets it, as run_in_executor gives it
        result, error = None, e
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # its loop is closed: nobody waits for it any more
        pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: the unit's outcome into its future (unless its waiter was cancelled)."""
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class QuickUnitSuspended(RuntimeError):
    """A unit given to run_unit awaited something other than conn.execute()."""


def drive_unit(conn: sa.Connection, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Runs the async unit fn(conn) to its end over the synchronous `conn`, on this thread
    and without an event loop (its awaits of conn.execute() complete at once);
    QuickUnitSuspended when it awaits anything else (the caller's transaction then rolls
    back). Shared by the quick reader and the quick writer (common/quickwrite.py)."""
    unit = cast(Coroutine[Any, Any, T], fn(cast(AsyncConnection, _Executes(conn))))
    try:
        unit.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    unit.close()
    raise QuickUnitSuspended("a quick unit awaited more than conn.execute()")


class _Executes:
    """What a unit uses of an AsyncConnection, over a synchronous Connection: its execute()
    completes at once (the result is buffered, as AsyncConnection.execute's), and its
    dialect."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect  # units pick their SQL by dialect (social/search_index.py)

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)


def placeholders(n: int) -> str:
    """`?, ?, ...` for an IN list of n values."""
    return ", ".join("?" * n)
