"""tus uploads at rest: one row each in the media database (component `tus`, table
`tus_uploads`) and their bytes in <[api] data_dir>/tus/<upload_id>.part.

The recorded offset is the truth. Bytes reach the file and are fdatasync'ed before the offset
that covers them is recorded, so a recorded offset never counts bytes that are not on disk;
bytes past it (written before a crash, or a discarded chunk) were never acknowledged and are
cut by `open_part` before the next write. Removal goes file first, then row: a crash between
leaves a row whose file is missing, which `open_part` reports (PartLost) and the sweeper
reclaims at expiry, rather than a file no row refers to.

Row functions are async (the database); file functions block and are meant for
asyncio.to_thread. Sizes and offsets are bytes; times are Unix seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db import Database, Migration, migrate

COMPONENT: Final = "tus"
LOCK: Final = "tus"
PART_DIR: Final = "tus"

metadata = sa.MetaData()
uploads = sa.Table(
    "tus_uploads",
    metadata,
    sa.Column("upload_id", sa.String(32), primary_key=True),  # uuid4 hex
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),  # Upload-Length, bytes
    sa.Column("offset", sa.BigInteger, nullable=False),  # acknowledged (synced) bytes
    sa.Column("metadata_json", sa.Text, nullable=False),  # the recognised Upload-Metadata
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("expires_unix_s", sa.Float, nullable=False),
    sa.Column("media_id", sa.BigInteger, nullable=True),  # set once ingested
)
_indexes = (
    sa.Index("tus_owner", uploads.c.owner_id, uploads.c.media_id),
    sa.Index("tus_expiry", uploads.c.expires_unix_s),
)
MIGRATIONS: Final = (
    Migration(1, "tus uploads", [CreateTable(uploads), *(CreateIndex(i) for i in _indexes)]),
)


class PartLost(Exception):
    """The part file is missing or shorter than the recorded offset (removed by hand, or
    a crash between the file's removal and the row's): the upload cannot continue."""


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

    @property
    def received(self) -> bool:
        """Every byte is acknowledged (the upload may still await its ingest)."""
        return self.offset == self.length


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Upload))


def _upload(row: Any) -> Upload:
    return Upload(**{n: row._mapping[n] for n in _FIELDS})


async def migrate_tables(db: Database) -> None:
    await migrate(db, COMPONENT, MIGRATIONS)


# -- rows ---------------------------------------------------------------------------------


async def create(db: Database, upload: Upload, *, per_owner_max: int, now: float) -> bool:
    """Records a new upload; False (nothing recorded) when its owner already has
    per_owner_max uploads that are neither ingested nor expired at `now`."""
    async with db.transaction(lock=LOCK) as conn:
        count = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(uploads)
                .where(
                    uploads.c.owner_id == upload.owner_id,
                    uploads.c.media_id.is_(None),
                    uploads.c.expires_unix_s > now,
                )
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


async def record_offset(db: Database, upload_id: str, *, expected: int, offset: int) -> bool:
    """Moves the offset from `expected` to `offset`; False when the row is gone or its
    offset is no longer `expected` (another process wrote meanwhile)."""
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            uploads.update()
            .where(uploads.c.upload_id == upload_id, uploads.c.offset == expected)
            .values(offset=offset)
        )
    return bool(result.rowcount)


async def record_media(db: Database, upload_id: str, media_id: int) -> None:
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            uploads.update().where(uploads.c.upload_id == upload_id).values(media_id=media_id)
        )


async def set_expiry(db: Database, upload_id: str, expires_unix_s: float) -> None:
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            uploads.update()
            .where(uploads.c.upload_id == upload_id)
            .values(expires_unix_s=expires_unix_s)
        )


async def delete(db: Database, upload_id: str) -> None:
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(uploads.delete().where(uploads.c.upload_id == upload_id))


async def expired(db: Database, *, now: float, limit: int = 1000) -> list[Upload]:
    """At most `limit` uploads whose expiry is at or before `now`, oldest first."""
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(uploads)
                .where(uploads.c.expires_unix_s <= now)
                .order_by(uploads.c.expires_unix_s)
                .limit(limit)
            )
        ).all()
    return [_upload(r) for r in rows]


# -- part files (blocking) ----------------------------------------------------------------


def part_path(data_dir: Path, upload_id: str) -> Path:
    return data_dir / PART_DIR / f"{upload_id}.part"


def create_part(path: Path) -> None:
    """An empty part file, its directory entry synced (so a synced byte in it survives a
    crash). Idempotent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    _sync_dir(path.parent)


def open_part(path: Path, offset: int) -> int:
    """A write descriptor positioned at `offset`, the file cut to `offset` first: bytes past
    the recorded offset were never acknowledged. Raises PartLost when fewer than `offset`
    bytes are there (a missing file at offset 0 is simply made)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        if offset:
            raise PartLost(str(path)) from None
        create_part(path)
        fd = os.open(path, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size < offset:
            raise PartLost(str(path))
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def cut_part(path: Path, offset: int) -> None:
    """Cuts the file to `offset` bytes (a discarded chunk). Raises PartLost as open_part."""
    os.close(open_part(path, offset))


def append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def remove_part(path: Path) -> None:
    """Removes the file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
