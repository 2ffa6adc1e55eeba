"""The social migrations: a database made at version 1 (sessions without public ids) is
brought to the current version with its sessions kept, each given a public id."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from common.db import Database, applied_versions, migrate, open_database
from social import schema
from tests.directory.conftest import PG_URL, pg_schema


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            database = await open_database(tmp_path / "meta.sqlite3")
        else:
            database = await open_database(
                PG_URL, schema=await stack.enter_async_context(pg_schema())
            )
        try:
            yield database
        finally:
            await database.close()


async def test_version_1_sessions_survive_the_upgrade_with_public_ids(db: Database) -> None:
    await migrate(db, schema.COMPONENT, schema.MIGRATIONS[:1])
    created = time.time() - 86400
    async with db.transaction() as conn:
        for n in range(3):
            await conn.execute(
                sa.text(
                    "INSERT INTO sessions (token_sha256, user_id, created_unix_s) "
                    "VALUES (:t, 7, :c)"
                ),
                {"t": f"{n:064x}", "c": created},
            )
    before = time.time()
    assert await migrate(db, schema.COMPONENT, schema.MIGRATIONS) == [2]
    assert await applied_versions(db, schema.COMPONENT) == [1, 2]
    async with db.snapshot() as conn:
        rows = (await conn.execute(sa.select(schema.sessions))).all()
        counters = await conn.execute(sa.select(sa.func.count()).select_from(schema.rate_counters))
        assert counters.scalar_one() == 0
    assert len(rows) == 3
    public = {r.public_id for r in rows}
    assert len(public) == 3 and all(len(p) == schema.PUBLIC_ID_CHARS for p in public)
    assert all(r.last_used_unix_s >= before and r.created_unix_s == created for r in rows)
    assert all(r.user_agent is None and r.address is None for r in rows)
    # The public ids are unique by index: a duplicate is refused.
    first, second = rows[0], rows[1]
    with pytest.raises(sa.exc.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute(
                schema.sessions.update()
                .where(schema.sessions.c.token_sha256 == first.token_sha256)
                .values(public_id=second.public_id)
            )


async def test_a_fresh_database_gets_every_version(db: Database) -> None:
    assert await migrate(db, schema.COMPONENT, schema.MIGRATIONS) == [1, 2]
    assert await migrate(db, schema.COMPONENT, schema.MIGRATIONS) == []
