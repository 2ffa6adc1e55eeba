"""The feed's fixtures: a migrated metadata database (SQLite file or a fresh PostgreSQL
schema) and a hot store (embedded, or the real Redis under a unique key prefix, deleted
afterwards). Under CI=true a missing server fails the test instead of skipping it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.db import Database, migrate, open_database
from common.ids import IdGenerator
from feed import schema as feed_schema
from feed.hotstore import HotStore, MemoryHotStore, RedisHotStore
from social import accounts, search_schema
from social import schema as social_schema
from social.config import SocialConfig
from tests.conftest import IN_CI
from tests.directory.conftest import PG_URL, pg_schema
from transformer import schema as media_schema

REDIS_URL = "redis://127.0.0.1:6379/0"


async def redis_store() -> RedisHotStore:
    store = RedisHotStore(REDIS_URL, prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        await store.redis.ping()
    except Exception as e:
        await store.close()
        problem = f"Redis at {REDIS_URL} unavailable: {e!r}"
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    return store


async def drop_keys(store: RedisHotStore) -> None:
    keys = [k async for k in store.redis.scan_iter(match=store.prefix + "*", count=1000)]
    for i in range(0, len(keys), 500):
        await store.redis.delete(*keys[i : i + 500])


@contextlib.asynccontextmanager
async def hot_store(kind: str) -> AsyncIterator[HotStore]:
    if kind == "memory":
        yield MemoryHotStore()
        return
    store = await redis_store()
    try:
        yield store
    finally:
        await drop_keys(store)
        await store.close()


@contextlib.asynccontextmanager
async def social_db(kind: str, tmp: Path) -> AsyncIterator[Database]:
    async with contextlib.AsyncExitStack() as stack:
        if kind == "sqlite":
            await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
            db = await open_database(tmp / "meta.sqlite3")
        else:
            schema = await stack.enter_async_context(pg_schema())
            db = await open_database(PG_URL, schema=schema)
        try:
            for component, migrations in (
                (media_schema.COMPONENT, media_schema.MIGRATIONS),
                (social_schema.COMPONENT, social_schema.MIGRATIONS),
                (feed_schema.COMPONENT, feed_schema.MIGRATIONS),
                (search_schema.COMPONENT, search_schema.MIGRATIONS),
            ):
                await migrate(db, component, migrations)
            yield db
        finally:
            await db.close()


@pytest.fixture(params=["memory", "redis"])
async def hot(request: pytest.FixtureRequest) -> AsyncIterator[HotStore]:
    async with hot_store(request.param) as store:
        yield store


_names = itertools.count()


async def make_user(db: Database, id_gen: IdGenerator, *, private: bool = False) -> int:
    user = await accounts.create(
        db,
        id_gen,
        SocialConfig(),
        username=f"u{next(_names)}_{uuid.uuid4().hex[:6]}",
        password=None,
        password_hash="unused",
    )
    if private:
        async with db.transaction() as conn:
            await conn.execute(
                social_schema.users.update()
                .where(social_schema.users.c.user_id == user.user_id)
                .values(is_private=True)
            )
    return user.user_id


async def ready_media(
    db: Database, id_gen: IdGenerator, owner: int, *, status: str = "ready"
) -> int:
    media_id = id_gen.next_id()
    row: dict[str, Any] = {
        "media_id": media_id,
        "owner_id": owner,
        "media_type": "image",
        "status": status,
        "fmt": 1,
        "size_bytes": 1,
        "width": 1,
        "height": 1,
        "cookie_hex": "0" * 16,
        "original_volume_id": 1,
        "created_unix_s": time.time(),
        "expires_unix_s": time.time() + 3600,
    }
    async with db.transaction() as conn:
        await conn.execute(media_schema.media.insert().values(**row))
    return media_id
