"""Group commit on a SQLite file (`Database.write(..., group=True)`): units that queue
while the writer is busy share one transaction and one COMMIT; a unit that raises is
rolled back alone; a COMMIT that fails fails every unit of its group and commits none;
each unit runs in its caller's context; a cancelled caller's unit still commits. On
PostgreSQL `group` changes nothing (the same cases pass unit by unit)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import GROUP_COMMIT_UNITS_MAX, Database, Migration, migrate, open_database
from tests.directory.conftest import PG_URL, pg_schema

metadata = sa.MetaData()
rows = sa.Table(
    "rows",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
)
MIGRATIONS = [Migration(1, "rows", [sa.schema.CreateTable(rows)])]

caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = await open_database(tmp_path / "db.sqlite3")
    else:
        async with pg_schema() as schema:
            database = await open_database(PG_URL, schema=schema)
            try:
                await migrate(database, "t", MIGRATIONS)
                yield database
            finally:
                await database.close()
            return
    try:
        await migrate(database, "t", MIGRATIONS)
        yield database
    finally:
        await database.close()


def add(name: str) -> Callable[[AsyncConnection], Awaitable[int]]:
    """A unit that appends a row with the next sequence number (read, then write: units
    of one group see each other's rows) and answers it."""

    async def unit(conn: AsyncConnection) -> int:
        last = (await conn.execute(sa.select(sa.func.max(rows.c.seq)))).scalar_one()
        seq = int(last or 0) + 1
        await conn.execute(rows.insert().values(name=name or caller.get(), seq=seq))
        return seq

    return unit


async def names(db: Database) -> dict[str, int]:
    async with db.snapshot() as conn:
        return {r.name: int(r.seq) for r in await conn.execute(sa.select(rows))}


async def test_concurrent_units_share_one_commit_and_fail_alone(db: Database) -> None:
    async def duplicate(conn: AsyncConnection) -> int:
        await conn.execute(rows.insert().values(name="dup", seq=0))
        await conn.execute(rows.insert().values(name="dup", seq=0))  # IntegrityError
        return 0

    units = [add(f"u{i}") for i in range(10)]
    units.insert(5, duplicate)
    got = await asyncio.gather(
        *(db.write(u, lock="t", group=True) for u in units), return_exceptions=True
    )
    assert isinstance(got[5], IntegrityError)
    assert sorted(g for i, g in enumerate(got) if i != 5) == list(range(1, 11))
    found = await names(db)  # "dup" rolled back
    assert sorted(found) == sorted(f"u{i}" for i in range(10))
    assert sorted(found.values()) == list(range(1, 11))
    if db.is_sqlite:
        assert found == {f"u{i}": i + 1 for i in range(10)}  # in the order they queued
        # All eleven queued before the first writer turn: one transaction, one COMMIT.
        stats = db.group_statistics()
        assert (stats.groups, stats.units) == (1, 11)
        # More than a group holds: several groups, every unit once, in order.
        await asyncio.gather(
            *(
                db.write(add(f"v{i}"), lock="t", group=True)
                for i in range(GROUP_COMMIT_UNITS_MAX + 6)
            )
        )
        stats = db.group_statistics()
        assert (stats.groups, stats.units) == (3, 11 + GROUP_COMMIT_UNITS_MAX + 6)
        found = await names(db)
        assert [found[f"v{i}"] for i in range(GROUP_COMMIT_UNITS_MAX + 6)] == list(
            range(11, 11 + GROUP_COMMIT_UNITS_MAX + 6)
        )


async def test_a_failed_commit_fails_the_whole_group(db: Database) -> None:
    # A deferred foreign key broken by the row named "poison": checked only at COMMIT.
    async with db.transaction() as conn:
        await conn.execute(sa.text("CREATE UNIQUE INDEX rows_seq ON rows (seq)"))
        await conn.execute(
            sa.text(
                "CREATE TABLE fault_rows (seq INTEGER REFERENCES rows (seq)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        )

    async def poison(conn: AsyncConnection) -> int:
        await conn.execute(sa.text("INSERT INTO fault_rows VALUES (-1)"))
        return -1

    got = await asyncio.gather(
        db.write(add("a"), lock="t", group=True),
        db.write(poison, lock="t", group=True),
        db.write(add("b"), lock="t", group=True),
        return_exceptions=True,
    )
    if db.is_sqlite:  # one group: its COMMIT fails for all three
        assert [type(g) for g in got] == [IntegrityError] * 3, got
        assert await names(db) == {}
    else:  # unit by unit: only the poisoned transaction fails
        assert sorted([got[0], got[2]]) == [1, 2] and isinstance(got[1], IntegrityError)
    # The writer goes on.
    assert await db.write(add("after"), lock="t", group=True) == (1 if db.is_sqlite else 3)


async def test_units_run_in_their_callers_context_and_outlive_a_cancelled_caller(
    tmp_path: Path,
) -> None:
    """SQLite only: on PostgreSQL a cancelled caller's transaction rolls back, as ever."""
    db = await open_database(tmp_path / "db.sqlite3")
    try:
        await migrate(db, "t", MIGRATIONS)
        await _context_and_cancel(db)
    finally:
        await db.close()


async def _context_and_cancel(db: Database) -> None:
    async def as_caller(name: str) -> int:
        caller.set(name)
        return await db.write(add(""), lock="t", group=True)

    first = asyncio.create_task(as_caller("ann"))
    second = asyncio.create_task(as_caller("bea"))
    await asyncio.sleep(0)  # both queued
    second.cancel()
    assert await first == 1
    await asyncio.wait([second])
    assert second.cancelled()
    # The cancelled caller's unit ran with its group all the same.
    assert await db.write(add("cid"), lock="t", group=True) == 3
    assert await names(db) == {"ann": 1, "bea": 2, "cid": 3}
