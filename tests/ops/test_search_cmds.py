"""`pinhole search reindex` on a real metadata database (SQLite, and PostgreSQL through a
pinhole.toml naming a fresh schema): a dropped index comes back, counts are recomputed,
--json prints the rows indexed, no progress bar off a terminal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from common.db import Database, migrate, open_database
from common.ids import IdGenerator
from social import accounts, search_schema
from social import schema as social_schema
from social.config import SocialConfig
from social.search import Search
from social.search_config import SearchConfig
from tests.directory.conftest import PG_URL, pg_schema
from tests.ops.test_cli import assert_no_progress_bar, pinhole
from transformer import schema as media_schema


async def _seed(db: Database) -> int:
    for component in (media_schema, social_schema, search_schema):
        await migrate(db, component.COMPONENT, component.MIGRATIONS)
    ids = IdGenerator(1)
    for name in ("quentin_blake", "roald_dahl"):
        user = await accounts.create(
            db, ids, SocialConfig(), username=name, password=None, password_hash="x"
        )
    async with db.transaction() as conn:
        await conn.execute(search_schema.hashtag_counts.insert().values(tag="stale", post_count=9))
        await search_schema.drop_index_tables(conn)
    return user.user_id


async def _check(db: Database, user_id: int) -> None:
    hits = await Search(db, SearchConfig()).find(user_id, "roald", "accounts", limit=5)
    assert [h.entity_id for h in hits] == [user_id]
    async with db.snapshot() as conn:
        counts = await conn.execute(sa.select(search_schema.hashtag_counts.c.post_count))
        assert [int(r[0]) for r in counts] == [0]  # recomputed from the posts (none)


@pytest.fixture(params=["sqlite", "postgresql"])
async def where(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Database, list[str]]]:
    """The database and the command's arguments naming it (PostgreSQL: ./pinhole.toml)."""
    if request.param == "sqlite":
        (tmp_path / "media").mkdir()
        db = await open_database(tmp_path / "media" / "media.sqlite3")
        try:
            yield db, ["--media-data", str(tmp_path / "media")]
        finally:
            await db.close()
        return
    async with pg_schema() as schema:
        (tmp_path / "pinhole.toml").write_text(
            f'[media]\ndatabase_url = "{PG_URL}"\ndatabase_schema = "{schema}"\n'
        )
        db = await open_database(PG_URL, schema=schema)
        try:
            yield db, []
        finally:
            await db.close()


async def test_reindex_restores_a_dropped_index(
    where: tuple[Database, list[str]], tmp_path: Path
) -> None:
    db, args = where
    user_id = await _seed(db)
    r = await asyncio.to_thread(pinhole, "search", "reindex", "--json", *args, cwd=tmp_path)
    assert r.code == 0, r
    assert_no_progress_bar(r)
    doc = json.loads(r.out)
    assert doc["indexed"] == {"accounts": 2, "hashtags": 1, "places": 0}
    await _check(db, user_id)
    r = await asyncio.to_thread(pinhole, "search", "reindex", *args, cwd=tmp_path)
    assert r.code == 0 and r.out.startswith("reindexed 2 accounts, 1 hashtags"), r
