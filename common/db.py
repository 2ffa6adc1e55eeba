"""A small async database layer over SQLAlchemy 2 Core: one code path for SQLite and PostgreSQL.

Contract:
- `open_database(url_or_sqlite_path)` gives a `Database`. A bare path (or a `sqlite` URL)
  is SQLite through aiosqlite: WAL journal, `synchronous=FULL`, `busy_timeout`, foreign
  keys on. A `postgresql+asyncpg://` URL is PostgreSQL; `schema` (optional) puts every
  table of this Database in that schema (created when missing) through `search_path`.
- `Database.transaction(lock=...)` is a *write* transaction. Write transactions on the
  same lock name serialize across processes: on SQLite every write transaction starts with
  `BEGIN IMMEDIATE` (the database write lock, taken before the first read, so a
  read-then-write never interleaves with another writer); on PostgreSQL it takes
  `pg_advisory_xact_lock(hash(schema, lock))` first and runs at READ COMMITTED, which is
  then equivalent. Code can therefore read, decide and write ("max(id)+1") without retry
  loops. On SQLite the write transactions of one process also queue on an asyncio lock
  before BEGIN (SQLite admits one writer; waiting in its busy handler sleeps up to 100 ms
  between retries, which made the tail latency of concurrent writes, `pinhole bench dm`);
  a write transaction must not open another inside it (it would wait for itself until
  the busy timeout, as SQLite would make it). The lock is held until commit: keep
  network calls out of write transactions.
- `Database.snapshot()` is a read transaction: a consistent view (deferred BEGIN on SQLite,
  REPEATABLE READ on PostgreSQL), never blocking writers.
- `Database.quick` (SQLite files only, else None) runs a few hot read-only statements in
  plain SQL, a unit in one thread hop (common/quickread.py).
- `Database.read(fn)` runs a read unit written for a snapshot (awaiting only
  `conn.execute`) in one thread hop on a SQLite file, in a snapshot elsewhere.
- `Database.write(fn, lock=...)` runs a write unit written for a transaction (awaiting
  only `conn.execute`) in one thread hop on a SQLite file (common/quickwrite.py), in a
  transaction() elsewhere: the same discipline, for the hottest writes (a DM's send).
- `Database.write(fn, lock=..., group=True)` on a SQLite file is group commit: write units
  that arrive while this process's writer is busy queue, and the next writer turn runs up
  to GROUP_COMMIT_UNITS_MAX of them in one transaction, each in its own savepoint, with one
  COMMIT (common/quickwrite.py `run_group`). Each caller gets its unit's value or
  exception once the COMMIT returned; a unit that raised was rolled back alone, a failed
  COMMIT fails the whole group. No unit waits for company: a group is whatever queued
  while the previous writer ran (no delay). Elsewhere `group` changes nothing.
- `migrate(db, component, migrations)` applies the component's missing migrations in
  version order, each in its own write transaction together with its row in
  `schema_migrations(component, version, description, applied_unix_s)`; it is idempotent
  and safe when several processes start at once (they serialize on one lock, the later
  ones find the versions applied). A database with a version newer than the code knows
  is refused (`MigrationError`), never silently used.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from common.quickread import QuickReader
from common.quickwrite import QuickWriter

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS_DEFAULT: Final = 30_000
POOL_CONNECTIONS_MAX_DEFAULT: Final = 10
MIGRATIONS_LOCK: Final = "schema_migrations"
# The snapshot() marker our SQLite "begin" hook reads (deferred BEGIN instead of IMMEDIATE).
_READ_OPTION: Final = "pinhole_read_only"

# Units of one group commit at most (a group is what queued during the previous write).
GROUP_COMMIT_UNITS_MAX: Final = 64
# A unit waiting for group commit: its caller's context, the unit, the caller's future.
_GroupedUnit = tuple[
    contextvars.Context, Callable[[AsyncConnection], Awaitable[Any]], asyncio.Future[Any]
]

MigrationStep = sa.Executable | str
MigrationCallable = Callable[[AsyncConnection], Awaitable[None]]


class DatabaseError(Exception):
    """Base of this module's errors."""


class MigrationError(DatabaseError):
    """The migrations or the recorded schema versions are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: `steps` are SQL statements (SQLAlchemy constructs or text) run
    in order, or one async callable taking the connection."""

    version: int
    description: str
    steps: Sequence[MigrationStep] | MigrationCallable


_migrations_metadata = sa.MetaData()
schema_migrations = sa.Table(
    "schema_migrations",
    _migrations_metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_unix_s", sa.Float, nullable=False),
)


class Database:
    """An engine plus the transaction discipline described in the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schema: str | None,
        quick: QuickReader | None = None,
        quick_writer: QuickWriter | None = None,
        writer_wait_s: float = SQLITE_BUSY_TIMEOUT_MS_DEFAULT / 1000,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.dialect: str = engine.dialect.name
        self.quick = quick
        self.quick_writer = quick_writer
        # SQLite takes one writer at a time: this process's writers queue here, in order,
        # instead of in SQLite's busy handler (sleeps of up to 100 ms between retries).
        # Waiting longer than SQLite's busy timeout fails as SQLite would have.
        self._sqlite_writer = asyncio.Lock()
        self._writer_wait_s = writer_wait_s
        # Group commit: (caller's context, unit, caller's future) waiting for a writer turn.
        self._grouped: list[_GroupedUnit] = []
        self._grouping: asyncio.Task[None] | None = None
        self._groups = 0
        self._grouped_units = 0

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    def lock_key(self, lock: str) -> int:
        """The signed 64-bit PostgreSQL advisory lock key of a lock name in this schema."""
        digest = hashlib.sha256(f"{self.schema or ''}/{lock}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def _sqlite_write_turn(self) -> None:
        try:
            async with asyncio.timeout(self._writer_wait_s):
                await self._sqlite_writer.acquire()
        except TimeoutError:
            raise DatabaseError(
                "database is locked: no write turn within the busy timeout"
            ) from None

    @contextlib.asynccontextmanager
    async def transaction(self, *, lock: str = "default") -> AsyncIterator[AsyncConnection]:
        """A write transaction, serialized with every other one on `lock` (on SQLite: with
        every other write transaction). Commits on normal exit, rolls back on an exception."""
        if self.is_sqlite:
            await self._sqlite_write_turn()
            try:
                async with self.engine.connect() as conn, conn.begin():
                    yield conn
            finally:
                self._sqlite_writer.release()
            return
        async with self.engine.connect() as conn, conn.begin():
            if self.is_postgresql:
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.lock_key(lock)}
                )
            yield conn

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction over a consistent view."""
        async with self.engine.connect() as conn:
            if self.is_postgresql:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            else:
                conn = await conn.execution_options(**{_READ_OPTION: True})
            async with conn.begin():
                yield conn

    async def read(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Runs the read unit `fn(conn)` over one consistent view: on a SQLite file in one
        thread hop (QuickReader.run_unit: `fn` may await only `conn.execute(...)`), else
        in a snapshot()."""
        if self.quick is not None:
            return await self.quick.run_unit(fn)
        async with self.snapshot() as conn:
            return await fn(conn)

    async def write(
        self, fn: Callable[[AsyncConnection], Awaitable[T]], *, lock: str, group: bool = False
    ) -> T:
        """Runs the write unit `fn(conn)` as one transaction() on `lock`: on a SQLite file in
        one thread hop (QuickWriter.run_unit: `fn` may await only `conn.execute(...)`),
        after this process's writer lock, as transaction() takes it; elsewhere inside
        transaction(). Commits when fn returns, rolls back when it raises. With `group`, on
        a SQLite file, it may share its transaction and COMMIT with other grouped units
        (the module docstring); its own effects still commit or roll back as a whole."""
        if self.quick_writer is None:
            async with self.transaction(lock=lock) as conn:
                return await fn(conn)
        if group:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[T] = loop.create_future()
            self._grouped.append((contextvars.copy_context(), fn, done))
            if self._grouping is None:
                self._grouping = asyncio.ensure_future(self._run_groups())
            # Shielded: a cancelled caller's unit still runs, or fails, with its group.
            return await asyncio.shield(done)
        await self._sqlite_write_turn()
        job = asyncio.ensure_future(self.quick_writer.run_unit(fn))
        # The turn ends when the transaction has, even if this caller is cancelled while
        # the writer thread still runs it (a thread cannot be interrupted).
        job.add_done_callback(self._end_quick_write)
        return await asyncio.shield(job)

    async def _run_groups(self) -> None:
        """Runs the queued grouped units, a group per writer turn, until none is left."""
        assert self.quick_writer is not None
        try:
            while self._grouped:
                try:
                    await self._sqlite_write_turn()
                except BaseException as e:
                    waiting, self._grouped = self._grouped, []
                    _fail(waiting, e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                # Taken at the turn, not before: what queued meanwhile joins this group.
                group = self._grouped[:GROUP_COMMIT_UNITS_MAX]
                del self._grouped[:GROUP_COMMIT_UNITS_MAX]
                # Held in `job` until it is done (awaited below, even when this task is
                # cancelled: the turn ends with the transaction, as in write()).
                units = [(c, fn) for c, fn, _ in group]
                job = asyncio.ensure_future(self.quick_writer.run_group(units))
                job.add_done_callback(self._end_quick_write)
                try:
                    results = await asyncio.shield(job)
                except BaseException as e:
                    _fail(group, e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                self._groups += 1
                self._grouped_units += len(group)
                for (_, _, done), (ok, value) in zip(group, results, strict=True):
                    if done.done():
                        continue
                    if ok:
                        done.set_result(value)
                    else:
                        done.set_exception(value)
        finally:
            self._grouping = None

    def group_statistics(self) -> GroupCommitStatistics:
        return GroupCommitStatistics(groups=self._groups, units=self._grouped_units)

    def _end_quick_write(self, job: asyncio.Future[Any]) -> None:
        self._sqlite_writer.release()
        if not job.cancelled():
            job.exception()  # retrieved: a cancelled caller's failure is not "never retrieved"

    async def close(self) -> None:
        try:
            if self.quick is not None:
                await self.quick.close()
            if self.quick_writer is not None:
                await self.quick_writer.close()
        finally:
            await self.engine.dispose()


@dataclass(frozen=True, slots=True)
class GroupCommitStatistics:
    groups: int  # transactions committed by group commit
    units: int  # write units in them


def _fail(waiting: Sequence[_GroupedUnit], error: BaseException) -> None:
    for _, _, done in waiting:
        if not done.done():
            done.set_exception(error)


def _wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Switches the file to WAL unless it is already. The switch needs an exclusive lock and
    SQLite may refuse it at once (SQLITE_BUSY without calling the busy handler) while another
    process opens the same new file: retry until the busy timeout. Runs on the driver's
    thread, never on the event loop."""
    import time

    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as e:  # the driver's OperationalError, whichever adapter wraps it
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def sqlite_writer_settings(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    """The settings of every SQLite connection that writes (the async engine's and the
    quick writer's): our own BEGIN, the busy timeout, WAL, synchronous=FULL, foreign keys."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL itself may wait for another process.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _wal(cursor, busy_timeout_ms)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_hooks(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    # The documented SQLAlchemy recipe for pysqlite/aiosqlite: the driver's own implicit
    # BEGIN is disabled and SQLAlchemy's "begin" event emits ours, so a write transaction
    # can take the write lock at BEGIN (IMMEDIATE) instead of at its first write, where
    # SQLite would fail a deferred upgrade with SQLITE_BUSY without waiting.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        sqlite_writer_settings(dbapi_connection, busy_timeout_ms)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_READ_OPTION):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_url(path: str | Path) -> str:
    return f"sqlite+aiosqlite:///{Path(path).expanduser().resolve()}"


async def open_database(
    url_or_sqlite_path: str | Path,
    *,
    schema: str | None = None,
    sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS_DEFAULT,
    pool_connections_max: int = POOL_CONNECTIONS_MAX_DEFAULT,
) -> Database:
    """A Database for a SQLite file path, a `sqlite+aiosqlite://` URL or a
    `postgresql+asyncpg://` URL. `schema` applies to PostgreSQL only."""
    text = str(url_or_sqlite_path)
    if "://" not in text:
        # The caller creates the directory; a missing one fails at the first connection.
        text = sqlite_url(text)
    url = make_url(text)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.get_driver_name() != "aiosqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        engine = create_async_engine(url)
        _sqlite_hooks(engine, busy_timeout_ms=sqlite_busy_timeout_ms)
        file = url.database not in (None, "", ":memory:") and "mode=memory" not in str(url)
        path = Path(str(url.database))
        quick = QuickReader(path, busy_timeout_ms=sqlite_busy_timeout_ms) if file else None
        quick_writer = (
            QuickWriter(
                path,
                busy_timeout_ms=sqlite_busy_timeout_ms,
                on_connect=sqlite_writer_settings,
            )
            if file
            else None
        )
        return Database(
            engine,
            schema=None,
            quick=quick,
            quick_writer=quick_writer,
            writer_wait_s=sqlite_busy_timeout_ms / 1000,
        )
    if backend == "postgresql":
        if url.get_driver_name() != "asyncpg":
            url = url.set(drivername="postgresql+asyncpg")
        connect_args: dict[str, Any] = {}
        if schema:
            _check_identifier(schema)
            connect_args["server_settings"] = {"search_path": schema}
        engine = create_async_engine(
            url,
            connect_args=connect_args,
            pool_size=pool_connections_max,
            max_overflow=0,
            pool_pre_ping=True,
        )
        db = Database(engine, schema=schema)
        if schema:
            try:
                async with db.transaction(lock="create_schema") as conn:
                    await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            except BaseException:
                await db.close()
                raise
        return db
    raise DatabaseError(f"unsupported database {backend!r}: use sqlite or postgresql+asyncpg")


def _check_identifier(name: str) -> None:
    if not (name.replace("_", "").isalnum() and name.isascii() and len(name) <= 63):
        raise DatabaseError(f"bad schema name {name!r}: ASCII letters, digits, _ (<= 63)")


async def migrate(db: Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Applies the missing migrations of `component` in order; returns the versions applied
    now (empty when the database was up to date)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise MigrationError(f"{component}: migration versions must be 1..n in order: {versions}")
    async with db.transaction(lock=MIGRATIONS_LOCK) as conn:
        await conn.run_sync(lambda c: _migrations_metadata.create_all(c, checkfirst=True))
    applied_now: list[int] = []
    for migration in migrations:
        async with db.transaction(lock=MIGRATIONS_LOCK) as conn:
            done = await _applied_versions(conn, component)
            newest = max(done, default=0)
            if newest > len(migrations):
                raise MigrationError(
                    f"{component}: the database is at version {newest}, newer than this "
                    f"code ({len(migrations)}); refusing to run against it"
                )
            if migration.version in done:
                continue
            if isinstance(migration.steps, Sequence):
                for step in migration.steps:
                    await conn.execute(sa.text(step) if isinstance(step, str) else step)
            else:
                await migration.steps(conn)
            await conn.execute(
                schema_migrations.insert().values(
                    component=component,
                    version=migration.version,
                    description=migration.description,
                    applied_unix_s=time.time(),
                )
            )
            applied_now.append(migration.version)
    return applied_now


async def applied_versions(db: Database, component: str) -> list[int]:
    async with db.snapshot() as conn:
        return sorted(await _applied_versions(conn, component))


async def _applied_versions(conn: AsyncConnection, component: str) -> set[int]:
    rows = await conn.execute(
        sa.select(schema_migrations.c.version).where(schema_migrations.c.component == component)
    )
    return {int(r[0]) for r in rows}
