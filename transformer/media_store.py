"""Media rows and their variants in the metadata database (transformer/schema.py).

A media is `processing` from the upload until its job publishes every variant in one
transaction (`publish`): readers never see a half-made ladder. Each variant's needle
location is recorded as soon as it is written (`record_variant`), so a re-run of a job
knows what an earlier attempt left and the expiry sweeper can delete every needle.

The transformer owns the `media` table: other packages write it only through this module
(`attach` when a media joins a post or becomes an avatar, `expire` when it leaves one) and
compare statuses with `MediaStatus`, never bare strings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from transformer.schema import media, variants

LOCK: Final = "media"


class MediaStatus(StrEnum):
    """A media's life: processing -> ready | failed, then expired (never attached) or
    deleted; the last two hold no needles. Stored as the member's text."""

    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"
    DELETED = "deleted"


# The statuses whose media still hold needles (what expiry and deletion reclaim).
HOLDING_NEEDLES: Final = (MediaStatus.PROCESSING, MediaStatus.READY, MediaStatus.FAILED)
GONE: Final = (MediaStatus.EXPIRED, MediaStatus.DELETED)


@dataclass(frozen=True, slots=True)
class MediaRow:
    media_id: int
    owner_id: int
    media_type: str
    status: MediaStatus
    fmt: int
    size_bytes: int
    width: int
    height: int
    duration_s: float | None
    filter_id: str | None
    cookie_hex: str
    original_volume_id: int
    placeholder: str | None
    error_code: str | None
    created_unix_s: float
    ready_unix_s: float | None
    expires_unix_s: float | None
    attached_unix_s: float | None
    original_cookie_hex: str | None = None
    pending_cookie_hex: str | None = None

    @property
    def cookie(self) -> int:
        """The cookie of the published variants."""
        return int(self.cookie_hex, 16)

    @property
    def original_cookie(self) -> int:
        """The cookie of the original's needle (the variants' for media stored before the
        original had its own)."""
        return int(self.original_cookie_hex or self.cookie_hex, 16)


@dataclass(frozen=True, slots=True)
class VariantRow:
    media_id: int
    rendition: int
    fmt: int
    volume_id: int
    size_bytes: int
    width: int
    height: int


_MEDIA_FIELDS: Final = tuple(f.name for f in dataclasses.fields(MediaRow))
_VARIANT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(VariantRow))


def _media(row: Any) -> MediaRow:
    fields = {n: row._mapping[n] for n in _MEDIA_FIELDS}
    fields["status"] = MediaStatus(fields["status"])
    return MediaRow(**fields)


def _variant(row: Any) -> VariantRow:
    return VariantRow(**{n: row._mapping[n] for n in _VARIANT_FIELDS})


# The variant columns in VariantRow's field order: a page's hundreds of variant rows are
# made positionally (VariantRow(*row)), without a mapping lookup per field.
_VARIANT_COLUMNS: Final = tuple(variants.c[n] for n in _VARIANT_FIELDS)


async def insert(conn: AsyncConnection, row: MediaRow) -> None:
    """Inserts a media inside the caller's transaction (with its job)."""
    await conn.execute(media.insert().values(**dataclasses.asdict(row)))


async def get(db: Database, media_id: int) -> tuple[MediaRow, list[VariantRow]] | None:
    """The media and its recorded variants (ordered by rendition, format); None if absent."""
    async with db.snapshot() as conn:
        row = (await conn.execute(sa.select(media).where(media.c.media_id == media_id))).first()
        if row is None:
            return None
        rows = (
            await conn.execute(
                sa.select(variants)
                .where(variants.c.media_id == media_id)
                .order_by(variants.c.rendition, variants.c.fmt)
            )
        ).all()
    return _media(row), [_variant(r) for r in rows]


async def rows(conn: AsyncConnection, media_ids: Iterable[int]) -> dict[int, MediaRow]:
    """The media of these ids that exist (without variants), read inside the caller's
    transaction: what another package checks before it attaches media."""
    wanted = sorted(set(media_ids))
    if not wanted:
        return {}
    result = await conn.execute(sa.select(media).where(media.c.media_id.in_(wanted)))
    return {r.media_id: _media(r) for r in result}


async def insert_variant(conn: AsyncConnection, row: VariantRow) -> None:
    """Records a variant inside the caller's transaction."""
    await conn.execute(variants.insert().values(**dataclasses.asdict(row)))


async def record_variant(db: Database, row: VariantRow, *, table: sa.Table = variants) -> None:
    """Records (or replaces: a re-run rewrites the same variant) one written variant, in
    media_variants or a table of its shape (a re-key's media_rekey_variants)."""
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            table.delete().where(
                table.c.media_id == row.media_id,
                table.c.rendition == row.rendition,
                table.c.fmt == row.fmt,
            )
        )
        await conn.execute(table.insert().values(**dataclasses.asdict(row)))


def variant_of(row: Any) -> VariantRow:
    """A VariantRow from a result row of media_variants (or a table of its shape)."""
    return _variant(row)


async def publish(
    conn: AsyncConnection,
    media_id: int,
    *,
    width: int,
    height: int,
    placeholder: str | None,
    duration_s: float | None = None,
) -> bool:
    """Turns a processing media ready inside the caller's transaction (with its job's
    completion). False when it is no longer processing (expired or deleted meanwhile)."""
    values: dict[str, Any] = {
        "status": MediaStatus.READY,
        "width": width,
        "height": height,
        "placeholder": placeholder,
        "ready_unix_s": time.time(),
    }
    if duration_s is not None:
        values["duration_s"] = duration_s
    result = await conn.execute(
        media.update()
        .where(media.c.media_id == media_id, media.c.status == MediaStatus.PROCESSING)
        .values(**values)
    )
    return bool(result.rowcount)


async def attach(conn: AsyncConnection, media_ids: Iterable[int], *, now: float) -> None:
    """Attaches media to a post or an avatar inside the caller's transaction: they stop
    expiring (an unattached upload expires, transformer's sweep)."""
    await conn.execute(
        media.update()
        .where(media.c.media_id.in_(list(media_ids)))
        .values(attached_unix_s=now, expires_unix_s=None)
    )


async def expire(conn: AsyncConnection, media_ids: Iterable[int], *, now: float) -> None:
    """Makes media expire at `now` inside the caller's transaction (their post deleted,
    their avatar replaced): the workers' sweep deletes their needles."""
    await conn.execute(
        media.update().where(media.c.media_id.in_(list(media_ids))).values(expires_unix_s=now)
    )


async def fail_processing(conn: AsyncConnection, media_ids: Iterable[int]) -> None:
    """Fails the media among these still processing (their job was dead-lettered), inside
    the caller's transaction."""
    await conn.execute(
        media.update()
        .where(media.c.media_id.in_(list(media_ids)), media.c.status == MediaStatus.PROCESSING)
        .values(status=MediaStatus.FAILED, error_code="processing_failed")
    )


async def reprocess_failed(conn: AsyncConnection, media_ids: Iterable[int]) -> None:
    """Makes the failed media among these processing again (their job is retried), inside
    the caller's transaction."""
    await conn.execute(
        media.update()
        .where(media.c.media_id.in_(list(media_ids)), media.c.status == MediaStatus.FAILED)
        .values(status=MediaStatus.PROCESSING, error_code=None)
    )


async def expired(db: Database, *, now: float, limit: int) -> list[MediaRow]:
    """Media past their expiry that still hold needles (any status but expired/deleted)."""
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(media)
                .where(
                    media.c.expires_unix_s.is_not(None),
                    media.c.expires_unix_s <= now,
                    media.c.status.in_(HOLDING_NEEDLES),
                )
                .order_by(media.c.expires_unix_s)
                .limit(limit)
            )
        ).all()
    return [_media(r) for r in rows]


async def mark_gone(db: Database, media_id: int, *, status: MediaStatus) -> None:
    """Marks a media expired or deleted once its needles' deletes are recorded, and
    forgets its variants."""
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(media.update().where(media.c.media_id == media_id).values(status=status))
        await conn.execute(variants.delete().where(variants.c.media_id == media_id))


async def get_many(
    conn: AsyncConnection, media_ids: list[int]
) -> dict[int, tuple[MediaRow, list[VariantRow]]]:
    """Several media with their variants in two queries (feed hydration)."""
    wanted = sorted(set(media_ids))
    if not wanted:
        return {}
    rows = (await conn.execute(sa.select(media).where(media.c.media_id.in_(wanted)))).all()
    found: dict[int, tuple[MediaRow, list[VariantRow]]] = {
        r.media_id: (_media(r), []) for r in rows
    }
    for r in await conn.execute(
        sa.select(*_VARIANT_COLUMNS)
        .where(variants.c.media_id.in_(wanted))
        .order_by(variants.c.media_id, variants.c.rendition, variants.c.fmt)
    ):
        found[r[0]][1].append(VariantRow(*r))
    return found
