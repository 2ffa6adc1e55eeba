"""Hot write transactions on SQLite, one thread hop per transaction.

A direct message's send was one write transaction of eight statements. Through
SQLAlchemy's async engine and aiosqlite each statement costs several hops between the event
loop and aiosqlite's thread (cursor, execute, fetch, close), plus BEGIN IMMEDIATE and COMMIT
of their own: about thirty hops a send, each a wake-up of the other thread and a turn for
the GIL, each a chance to wait for a core on a loaded machine (`pinhole bench dm`; the
decision and its figures: ARCHITECTURE.md, "Hot writes in one hop").

`QuickWriter.run_unit(fn)` runs a SQLAlchemy write unit the way `QuickReader.run_unit` runs
a read unit (common/quickread.py): `fn(conn)` is an async function written for
`Database.transaction()`'s AsyncConnection whose only awaits are `conn.execute(...)`; here
it gets a synchronous connection on the writer thread, inside one BEGIN IMMEDIATE ...
COMMIT, and is driven to its end there: the same statements, one hop. An exception rolls
the transaction back; a unit that awaits anything else fails (QuickUnitSuspended) and is
rolled back too. The unit runs in a copy of the caller's context: context variables it sets
stay there, and objects they hold (a request's list of notifications to publish after
commit, realtime/events.py) are shared. The connection has the settings of every writing
connection (WAL, synchronous=FULL, foreign keys, the busy timeout): a commit here is as
durable as the async engine's.

The caller (`Database.write`) takes the process's SQLite writer lock first, so these
transactions queue in order with the async engine's write transactions; other processes
meet SQLite's busy timeout as before.

`run_group(units)` is group commit (`Database.write(..., group=True)`, a DM's send): the
units that queued while the writer was busy run in one transaction, each in a savepoint of
its own, and share one COMMIT and its fsync. A unit that raises is rolled back alone; a
COMMIT that fails fails every unit of the group, none of which then committed.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from common.quickread import drive_unit

T = TypeVar("T")

# One thread: SQLite admits one writer, and the process's writers already queue on the
# Database's writer lock.
QUICK_WRITE_THREADS: Final = 1


class QuickWriter:
    def __init__(
        self, path: Path, *, busy_timeout_ms: int, on_connect: Callable[[Any, int], None]
    ) -> None:
        """`on_connect(dbapi_connection, busy_timeout_ms)` applies the settings every
        writing connection has (common/db.py `sqlite_writer_settings`)."""
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._on_connect = on_connect
        self._executor = ThreadPoolExecutor(QUICK_WRITE_THREADS, thread_name_prefix="quickwrite")
        self._engine: sa.Engine | None = None

    def _connect(self) -> sa.Engine:
        """The writer thread's synchronous engine (made at first use), with the settings of
        every writing connection and BEGIN IMMEDIATE."""
        if self._engine is None:
            engine = sa.create_engine(f"sqlite:///{self.path}", poolclass=sa.pool.StaticPool)

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
                self._on_connect(dbapi_connection, self.busy_timeout_ms)

            @event.listens_for(engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            self._engine = engine
        return self._engine

    def _unit(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        with self._connect().connect() as conn, conn.begin():
            return drive_unit(conn, fn)

    async def run_unit(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Runs the write unit fn(conn) in one transaction on the writer thread; commits
        when it returns, rolls back when it raises."""
        loop = asyncio.get_running_loop()
        # In the caller's context: what the unit records in context variables (the
        # notifications a request publishes after commit, realtime/events.py) reaches it.
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, context.run, self._unit, fn)

    def _group(
        self, units: list[tuple[contextvars.Context, Callable[[AsyncConnection], Awaitable[Any]]]]
    ) -> list[tuple[bool, Any]]:
        """The units in one BEGIN IMMEDIATE ... COMMIT, each inside a savepoint of its own:
        a unit that raises is rolled back to its savepoint alone and reported (False, the
        exception); the others are (True, their value). One COMMIT, one fsync, for all;
        a failed COMMIT raises, and then none of them committed."""
        results: list[tuple[bool, Any]] = []
        with self._connect().connect() as conn, conn.begin():
            for context, fn in units:
                savepoint = conn.begin_nested()
                try:
                    value = context.run(drive_unit, conn, fn)
                except Exception as e:
                    savepoint.rollback()
                    results.append((False, e))
                else:
                    savepoint.commit()
                    results.append((True, value))
        return results

    async def run_group(
        self, units: list[tuple[contextvars.Context, Callable[[AsyncConnection], Awaitable[Any]]]]
    ) -> list[tuple[bool, Any]]:
        """Runs write units, each in its caller's context, in one transaction on the writer
        thread (group commit, `_group`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._group, units)

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._dispose)
        self._executor.shutdown(wait=False)
