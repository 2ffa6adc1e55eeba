"""Incomplete tus uploads: one row each in the metadata database (component `tus`) and
their bytes in <[api] data_dir>/tus/<upload_id>.part. The recorded offset is the truth:
bytes past it (written before a crash, never acknowledged) are cut at the next PATCH."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db import Database, Migration, migrate

COMPONENT: Final = "tus"
LOCK: Final = "tus"

metadata = sa.MetaData()
uploads = sa.Table(
    "tus_uploads",
    metadata,
    sa.Column("upload_id", sa.String(32), primary_key=True),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("metadata_json", sa.Text, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("expires_unix_s", sa.Float, nullable=False),
    sa.Column("media_id", sa.BigInteger, nullable=True),
)
_indexes = (
    sa.Index("tus_owner", uploads.c.owner_id, uploads.c.media_id),
    sa.Index("tus_expiry", uploads.c.expires_unix_s),
)
MIGRATIONS: Final = (
    Migration(1, "tus uploads", [CreateTable(uploads), *(CreateIndex(i) for i in _indexes)]),
)


@dataclass(frozen=True, slots=True)
class Upload:
    upload_id: str
    owner_id: int
    length: int
    offset: int
    metadata_json: str
    created_unix_s: float
    expires_unix_s: float
    media_id: int | None

    @property
    def metadata(self) -> dict[str, str]:
        doc: dict[str, str] = json.loads(self.metadata_json)
        return doc


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Upload))


def _upload(row: Any) -> Upload:
    return Upload(**{n: row._mapping[n] for n in _FIELDS})


async def migrate_tables(db: Database) -> None:
    await migrate(db, COMPONENT, MIGRATIONS)


async def create(db: Database, upload: Upload, *, per_owner_max: int) -> bool:
    """Records a new upload; False when its owner already has per_owner_max incomplete."""
    async with db.transaction(lock=LOCK) as conn:
        count = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(uploads)
                .where(uploads.c.owner_id == upload.owner_id, uploads.c.media_id.is_(None))
            )
        ).scalar_one()
        if count >= per_owner_max:
            return False
        await conn.execute(uploads.insert().values(**dataclasses.asdict(upload)))
    return True


async def get(db: Database, upload_id: str) -> Upload | None:
    async with db.snapshot() as conn:
        row = (
            await conn.execute(sa.select(uploads).where(uploads.c.upload_id == upload_id))
        ).first()
    return None if row is None else _upload(row)


async def update(db: Database, upload_id: str, **values: Any) -> None:
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            uploads.update().where(uploads.c.upload_id == upload_id).values(**values)
        )


async def delete(db: Database, upload_id: str) -> None:
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(uploads.delete().where(uploads.c.upload_id == upload_id))


async def expired(db: Database, *, now: float, limit: int = 1000) -> list[Upload]:
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(uploads).where(uploads.c.expires_unix_s <= now).limit(limit)
            )
        ).all()
    return [_upload(r) for r in rows]


async def pending(db: Database, owner_id: int, *, now: float) -> tuple[int, int]:
    """The owner's incomplete uploads that have not expired: (how many, their Upload-Length
    summed). They reserve their share of the owner's daily upload quota."""
    query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(uploads.c.length), 0)).where(
        uploads.c.owner_id == owner_id,
        uploads.c.media_id.is_(None),
        uploads.c.expires_unix_s > now,
    )
    async with db.snapshot() as conn:
        count, length = (await conn.execute(query)).one()
    return int(count), int(length)
