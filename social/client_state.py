"""What the Mastodon client API keeps beyond pinhole's own model (docs/api/mastodon.md):

- a media's description (alt text) given before it is posted: Mastodon clients describe an
  upload first and post it after; posting copies it into post_media.alt_text, where
  pinhole keeps alt text;
- the `Idempotency-Key` of a status: the same user and key within IDEMPOTENCY_TTL_S answer
  the first post again instead of posting twice. Looked up and recorded inside the post's
  own transaction, so two concurrent retries still make one post.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db import Database, Migration

COMPONENT: Final = "client_state"
LOCK: Final = "social"
IDEMPOTENCY_TTL_S: Final = 3600  # Mastodon keeps a key for an hour
IDEMPOTENCY_KEY_CHARS_MAX: Final = 200
DESCRIPTION_CHARS_MAX: Final = 500  # = [social] alt_text_chars_max's default

metadata = sa.MetaData()

media_descriptions = sa.Table(
    "media_descriptions",
    metadata,
    sa.Column("media_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(DESCRIPTION_CHARS_MAX), nullable=False),
)

post_keys = sa.Table(
    "post_idempotency_keys",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_sha256", sa.String(64), primary_key=True),
    sa.Column("post_id", sa.BigInteger, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

MIGRATIONS: Final = (
    Migration(
        1,
        "media descriptions before posting, status idempotency keys",
        [
            CreateTable(media_descriptions),
            CreateTable(post_keys),
            CreateIndex(sa.Index("post_keys_created", post_keys.c.created_unix_s)),
        ],
    ),
)


def _key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


async def describe(db: Database, media_id: int, description: str | None) -> None:
    """Sets (or with None/"" removes) a media's description; the caller owns the media."""
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            media_descriptions.delete().where(media_descriptions.c.media_id == media_id)
        )
        if description:
            await conn.execute(
                media_descriptions.insert().values(media_id=media_id, description=description)
            )


async def descriptions(conn: AsyncConnection, media_ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(media_ids))
    if not wanted:
        return {}
    d = media_descriptions.c
    rows = await conn.execute(sa.select(d.media_id, d.description).where(d.media_id.in_(wanted)))
    return {int(m): text for m, text in rows}


async def replayed(conn: AsyncConnection, user_id: int, key: str) -> int | None:
    """The post a live key already made (inside the post's transaction), else None; stale
    keys are dropped on the way."""
    k = post_keys.c
    now = time.time()
    await conn.execute(post_keys.delete().where(k.created_unix_s < now - IDEMPOTENCY_TTL_S))
    row = (
        await conn.execute(
            sa.select(k.post_id).where(k.user_id == user_id, k.key_sha256 == _key_digest(key))
        )
    ).first()
    return None if row is None else int(row.post_id)


async def remember(conn: AsyncConnection, user_id: int, key: str, post_id: int) -> None:
    await conn.execute(
        post_keys.insert().values(
            user_id=user_id,
            key_sha256=_key_digest(key),
            post_id=post_id,
            created_unix_s=time.time(),
        )
    )
