"""common/db.py against SQLite and PostgreSQL: the same cases on both (parametrized)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import (
    Database,
    DatabaseError,
    Migration,
    MigrationError,
    applied_versions,
    migrate,
    open_database,
)
from tests.directory.conftest import PG_URL, pg_schema

REPO = Path(__file__).parents[2]

metadata = sa.MetaData()
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
)


async def _seed(conn: AsyncConnection) -> None:
    await conn.execute(counters.insert().values(name="c", value=0))


MIGRATIONS = [
    Migration(1, "counters", [sa.schema.CreateTable(counters)]),
    Migration(2, "seed", _seed),
    Migration(3, "an index", ["CREATE INDEX counters_by_value ON counters (value)"]),
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(url or path, schema) of an empty database."""
    if request.param == "sqlite":
        yield str(tmp_path / "db.sqlite3"), ""
        return
    async with pg_schema() as schema:
        yield PG_URL, schema


async def _open(target: tuple[str, str]) -> Database:
    return await open_database(target[0], schema=target[1] or None)


async def _value(db: Database) -> int:
    async with db.snapshot() as conn:
        return int((await conn.execute(sa.select(counters.c.value))).scalar_one())


async def test_migrations_apply_in_order_once(target: tuple[str, str]) -> None:
    db = await _open(target)
    try:
        assert await migrate(db, "t", MIGRATIONS[:2]) == [1, 2]
        assert await migrate(db, "t", MIGRATIONS) == [3]
        assert await migrate(db, "t", MIGRATIONS) == []
        assert await applied_versions(db, "t") == [1, 2, 3]
        assert await applied_versions(db, "other") == []
        assert await _value(db) == 0
        with pytest.raises(MigrationError, match="newer"):
            await migrate(db, "t", MIGRATIONS[:2])
    finally:
        await db.close()


async def test_bad_migration_lists_are_refused(target: tuple[str, str]) -> None:
    db = await _open(target)
    try:
        with pytest.raises(MigrationError):
            await migrate(db, "t", [MIGRATIONS[1]])
        with pytest.raises(MigrationError):
            await migrate(db, "t", [MIGRATIONS[0], MIGRATIONS[2]])
    finally:
        await db.close()


async def test_a_failing_migration_leaves_earlier_ones_and_retries(target: tuple[str, str]) -> None:
    db = await _open(target)
    broken = [*MIGRATIONS[:2], Migration(3, "broken", ["CREATE INDEX x ON no_such_table (a)"])]
    try:
        with pytest.raises(sa.exc.DBAPIError):
            await migrate(db, "t", broken)
        assert await applied_versions(db, "t") == [1, 2]
        assert await migrate(db, "t", MIGRATIONS) == [3]
    finally:
        await db.close()


async def test_concurrent_migrations_apply_once(target: tuple[str, str]) -> None:
    dbs = [await _open(target) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(db, "t", MIGRATIONS) for db in dbs))
        assert sorted(v for r in results for v in r) == [1, 2, 3]
        assert await _value(dbs[0]) == 0
    finally:
        for db in dbs:
            await db.close()


async def test_transaction_rolls_back_on_error(target: tuple[str, str]) -> None:
    db = await _open(target)
    try:
        await migrate(db, "t", MIGRATIONS)
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute(counters.update().values(value=5))
                raise RuntimeError("boom")
        assert await _value(db) == 0
    finally:
        await db.close()


async def _increment(db: Database, times: int) -> None:
    for _ in range(times):
        async with db.transaction(lock="counters") as conn:
            value = (await conn.execute(sa.select(counters.c.value))).scalar_one()
            await asyncio.sleep(0)  # let other writers try to interleave
            await conn.execute(counters.update().values(value=value + 1))


async def test_read_modify_write_serializes_within_a_process(target: tuple[str, str]) -> None:
    dbs = [await _open(target) for _ in range(3)]
    try:
        await migrate(dbs[0], "t", MIGRATIONS)
        await asyncio.gather(*(_increment(db, 20) for db in dbs))
        assert await _value(dbs[0]) == 60
    finally:
        for db in dbs:
            await db.close()


CHILD = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from tests.common.test_db import MIGRATIONS, _increment
from common.db import migrate, open_database

async def main():
    db = await open_database({url!r}, schema={schema!r} or None)
    try:
        await migrate(db, "t", MIGRATIONS)
        await _increment(db, 25)
    finally:
        await db.close()

asyncio.run(main())
"""


async def test_two_processes_migrate_and_write_without_lost_updates(
    target: tuple[str, str],
) -> None:
    code = CHILD.format(repo=str(REPO), url=target[0], schema=target[1])
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stderr=subprocess.PIPE, cwd=REPO
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = await p.communicate()
        assert p.returncode == 0, err.decode()
    db = await _open(target)
    try:
        assert await applied_versions(db, "t") == [1, 2, 3]
        assert await _value(db) == 50
    finally:
        await db.close()


async def test_unsupported_urls() -> None:
    with pytest.raises(DatabaseError):
        await open_database("mysql://x/y")
    with pytest.raises(DatabaseError):
        await open_database(PG_URL, schema="bad name;")


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "p.sqlite3")
    try:
        async with db.snapshot() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        await db.close()


async def test_read_units_see_one_view_and_refuse_other_awaits(target: tuple[str, str]) -> None:
    """Database.read: the same rows as a snapshot (SQLite: on the reader thread), the
    writes committed before it, and a unit awaiting anything but conn.execute fails."""
    db = await _open(target)
    try:
        await migrate(db, "t", MIGRATIONS)
        async with db.transaction() as conn:
            await conn.execute(counters.insert(), [{"name": f"n{i}", "value": i} for i in range(5)])

        async def unit(conn: AsyncConnection) -> tuple[list[tuple[str, int]], int]:
            rows = await conn.execute(sa.select(counters).order_by(counters.c.name))
            total = (await conn.execute(sa.select(sa.func.sum(counters.c.value)))).scalar_one()
            return [(r.name, r.value) for r in rows], int(total)

        got = await db.read(unit)
        async with db.snapshot() as conn:
            expected = await unit(conn)
        assert got == expected and got[1] == 10 and len(got[0]) == 6
        async with db.transaction() as conn:
            await conn.execute(counters.update().values(value=counters.c.value + 1))
        assert (await db.read(unit))[1] == 16  # a later unit sees the commit

        async def sleeps(conn: AsyncConnection) -> int:
            await asyncio.sleep(0)
            return 1

        if db.quick is not None:
            from common.quickread import QuickUnitSuspended

            with pytest.raises(QuickUnitSuspended):
                await db.read(sleeps)
        else:
            assert await db.read(sleeps) == 1  # PostgreSQL: an ordinary snapshot
    finally:
        await db.close()


async def test_write_units_commit_roll_back_and_queue_with_transactions(
    target: tuple[str, str],
) -> None:
    """Database.write: a unit's writes commit together (SQLite: on the writer thread, in
    one hop), an exception rolls them all back, a unit awaiting anything but conn.execute
    is refused and rolled back, and concurrent units and transaction()s lose no update."""
    db = await _open(target)
    try:
        await migrate(db, "t", MIGRATIONS)

        async def add(conn: AsyncConnection) -> int:
            value = (
                await conn.execute(sa.select(counters.c.value).where(counters.c.name == "c"))
            ).scalar_one()
            await conn.execute(
                counters.update().where(counters.c.name == "c").values(value=value + 1)
            )
            return int(value) + 1

        assert await db.write(add, lock="t") == 1

        async def fails(conn: AsyncConnection) -> None:
            await conn.execute(counters.insert().values(name="gone", value=1))
            await conn.execute(counters.update().values(value=counters.c.value + 100))
            raise ValueError("refused")

        with pytest.raises(ValueError, match="refused"):
            await db.write(fails, lock="t")

        async def sleeps(conn: AsyncConnection) -> None:
            await conn.execute(counters.insert().values(name="half", value=1))
            await asyncio.sleep(0)

        if db.quick_writer is not None:
            from common.quickread import QuickUnitSuspended

            with pytest.raises(QuickUnitSuspended):
                await db.write(sleeps, lock="t")
        else:
            await db.write(sleeps, lock="t")  # PostgreSQL: an ordinary transaction
            async with db.transaction() as conn:
                await conn.execute(counters.delete().where(counters.c.name == "half"))

        async def in_transaction() -> None:
            async with db.transaction(lock="t") as conn:
                await add(conn)

        await asyncio.gather(
            *(db.write(add, lock="t") for _ in range(20)), *(in_transaction() for _ in range(20))
        )
        async with db.snapshot() as conn:
            rows = dict((await conn.execute(sa.select(counters.c.name, counters.c.value))).all())
        assert rows == {"c": 41}
    finally:
        await db.close()


async def test_a_cancelled_write_unit_still_commits_before_the_next_writer(
    tmp_path: Path,
) -> None:
    """SQLite: the writer thread cannot be interrupted, so a caller cancelled while its unit
    runs does not end its turn; the next writer starts after that unit committed."""
    db = await open_database(tmp_path / "db.sqlite3")
    try:
        await migrate(db, "t", MIGRATIONS)
        started = asyncio.Event()
        release = threading.Event()
        loop = asyncio.get_running_loop()

        async def slow(conn: AsyncConnection) -> None:
            await conn.execute(counters.update().values(value=7))
            loop.call_soon_threadsafe(started.set)
            release.wait(30)  # the writer thread, not the event loop, waits here

        job = asyncio.create_task(db.write(slow, lock="t"))
        await started.wait()
        job.cancel()
        await asyncio.wait([job])
        assert job.cancelled()
        assert db._sqlite_writer.locked()  # the unit still runs: the turn is still its own
        waiting = asyncio.create_task(_value_in_transaction(db))
        release.set()
        assert await waiting == 7
    finally:
        await db.close()


async def _value_in_transaction(db: Database) -> int:
    async with db.transaction() as conn:
        return int((await conn.execute(sa.select(counters.c.value))).scalar_one())


async def test_quick_reader_hands_units_over_and_back(tmp_path: Path) -> None:
    """QuickReader's own hand-off: results and exceptions come back to their caller,
    units run in order on one thread that is not the loop's, a cancelled waiter does not
    stop the units after it, and close() ends the thread and refuses later units."""
    db = await open_database(tmp_path / "q.sqlite3")
    await migrate(db, "t", MIGRATIONS)
    quick = db.quick
    assert quick is not None
    async with db.transaction() as conn:
        await conn.execute(counters.update().where(counters.c.name == "c").values(value=7))
    threads: list[int] = []

    def value(c: sqlite3.Connection) -> int:
        threads.append(threading.get_ident())
        return int(c.execute("SELECT value FROM counters WHERE name = 'c'").fetchone()[0])

    got = await asyncio.gather(*(quick.run(value) for _ in range(20)))
    assert got == [7] * 20
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()

    def fails(c: sqlite3.Connection) -> None:
        c.execute("SELECT nope FROM counters")

    with pytest.raises(sqlite3.OperationalError, match="nope"):
        await quick.run(fails)
    started = threading.Event()
    release = threading.Event()

    def blocks(c: sqlite3.Connection) -> int:
        started.set()
        release.wait(5)
        return 1

    first = asyncio.ensure_future(quick.run(blocks))
    await asyncio.to_thread(started.wait, 5)
    first.cancel()
    after = asyncio.ensure_future(quick.run(value))
    release.set()
    assert await after == 7  # the reader went on past the unit nobody waits for
    assert first.cancelled()
    reader = next(t for t in threading.enumerate() if t.ident == threads[0])
    await db.close()
    await asyncio.to_thread(reader.join, 5)
    assert not reader.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await quick.run(value)
