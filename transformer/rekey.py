"""Re-keying a media: its published variants rewritten under a new cookie and the old
needles deleted, so that every public URL handed out before stops working. Done when an
owner turns private (docs/operations/security.md): the URLs their followers' apps get from
then on are signed and expire, and the public ones already out in the world must die.

A re-key is a media job of kind "rekey" (transformer/jobs.py), queued in the transaction
that makes the owner private, run by the workers, idempotent and resumable:

1. the new cookie is drawn once and kept in `media.pending_cookie_hex`;
2. each variant but the original (which has its own cookie and was never public) is read
   at its current URL and written under the new cookie to a volume other than its old one;
   HLS playlists are rewritten on the way to name their rungs' and segments' new URLs, so
   variants go in descending rendition order (segments, rung playlists, photos, master).
   Each new location is recorded in `media_rekey_variants` right after its write: a re-run
   skips what an earlier attempt wrote;
3. one transaction swaps: the variants' rows take the new locations, the old locations go
   to `media_needle_deletes`, the cookie becomes the pending one, the job is done;
4. that outbox is drained by every worker (`drain_deletes`): each delete is recorded by
   the directory, which deletes on every replica and invalidates the caches, and then the
   row goes. From then on the old URLs answer 404 in every tier.

A new volume for every variant (never the old one) is what makes the deletes safe: a
delete names (volume, key, alt key), and the new needle shares key and alt key with the
old.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.jobs import JobState
from common.jobs.schema import jobs as jobs_table
from common.photo import Format, alt_key, photo_path
from transformer import jobs, media_store
from transformer import variants as v
from transformer.media_store import MediaStatus, VariantRow
from transformer.schema import media, needle_deletes, rekey_variants, variants

KIND: Final = jobs.REKEY.name
DRAIN_BATCH_MAX: Final = 500


async def request(conn: AsyncConnection, media_ids: Iterable[int], *, now: float) -> int:
    """Queues a re-key of each ready media among `media_ids` inside the caller's transaction;
    how many were queued. Media still processing need none (no URL of theirs was handed
    out), nor do ones whose re-key is already queued or running."""
    wanted = sorted(set(media_ids))
    if not wanted:
        return 0
    ready = sa.select(media.c.media_id).where(
        media.c.media_id.in_(wanted), media.c.status == MediaStatus.READY
    )
    result = await conn.execute(
        jobs_table.update()
        .where(
            jobs_table.c.queue == jobs.QUEUE,
            jobs_table.c.subject_id.in_(ready),
            # A done job (the ladder, or an earlier re-key) or a dead re-key.
            sa.or_(
                jobs_table.c.state == JobState.DONE,
                sa.and_(jobs_table.c.state == JobState.DEAD, jobs_table.c.kind == KIND),
            ),
        )
        .values(
            kind=KIND,
            priority=jobs.REKEY.priority,
            state=JobState.QUEUED,
            attempts=0,
            run_after_unix_s=now,
            last_error=None,
            lease_owner=None,
            lease_expires_unix_s=None,
            updated_unix_s=now,
        )
    )
    return int(result.rowcount or 0)


async def pending_cookie(db: Database, media_id: int) -> int:
    """The re-key's new cookie: drawn by its first attempt, the same for every later one."""
    candidate = f"{secrets.randbits(64):016x}"
    async with db.transaction(lock=jobs.LOCK) as conn:
        await conn.execute(
            media.update()
            .where(media.c.media_id == media_id, media.c.pending_cookie_hex.is_(None))
            .values(pending_cookie_hex=candidate)
        )
        kept = (
            await conn.execute(
                sa.select(media.c.pending_cookie_hex).where(media.c.media_id == media_id)
            )
        ).scalar_one()
    return int(kept, 16)


async def written(db: Database, media_id: int) -> dict[tuple[int, int], VariantRow]:
    """What earlier attempts wrote under the new cookie, by (rendition, format)."""
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(rekey_variants).where(rekey_variants.c.media_id == media_id)
            )
        ).all()
    found = (media_store.variant_of(r) for r in rows)
    return {(row.rendition, row.fmt): row for row in found}


async def record(db: Database, row: VariantRow) -> None:
    """Records one variant written under the new cookie (right after its write)."""
    await media_store.record_variant(db, row, table=rekey_variants)


async def swap(
    conn: AsyncConnection, media_id: int, old: list[VariantRow], new: list[VariantRow]
) -> bool:
    """Inside the caller's transaction (the one that completes the job): the new locations
    become the variants, the old go to the delete outbox, the pending cookie becomes the
    cookie. False when the media is no longer ready (deleted meanwhile): then nothing
    changes but the new needles going to the outbox too."""
    now = time.time()
    result = await conn.execute(
        media.update()
        .where(
            media.c.media_id == media_id,
            media.c.status == MediaStatus.READY,
            media.c.pending_cookie_hex.is_not(None),
        )
        .values(cookie_hex=media.c.pending_cookie_hex, pending_cookie_hex=None)
    )
    swapped = bool(result.rowcount)
    gone = old if swapped else new
    for row in gone:
        await _queue_delete(conn, row, now)
    if swapped:
        for row in old:
            await conn.execute(
                variants.delete().where(
                    variants.c.media_id == media_id,
                    variants.c.rendition == row.rendition,
                    variants.c.fmt == row.fmt,
                )
            )
        for row in new:
            await conn.execute(variants.insert().values(**dataclasses.asdict(row)))
    await conn.execute(rekey_variants.delete().where(rekey_variants.c.media_id == media_id))
    return swapped


async def _queue_delete(conn: AsyncConnection, row: VariantRow, now: float) -> None:
    key = {
        "media_id": row.media_id,
        "volume_id": row.volume_id,
        "alt_key": alt_key(row.rendition, row.fmt),
    }
    exists = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(needle_deletes)
            .where(*(needle_deletes.c[k] == val for k, val in key.items()))
        )
    ).scalar_one()
    if not exists:
        await conn.execute(needle_deletes.insert().values(**key, created_unix_s=now))


@dataclass(frozen=True, slots=True)
class NeedleDelete:
    media_id: int
    volume_id: int
    alt_key: int


async def pending_deletes(db: Database, *, limit: int = DRAIN_BATCH_MAX) -> list[NeedleDelete]:
    """The oldest needles waiting for their delete to be recorded."""
    async with db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(needle_deletes)
                .order_by(needle_deletes.c.created_unix_s)
                .limit(min(limit, DRAIN_BATCH_MAX))
            )
        ).all()
    return [NeedleDelete(int(r.media_id), int(r.volume_id), int(r.alt_key)) for r in rows]


async def delete_recorded(db: Database, row: NeedleDelete) -> None:
    """The directory has recorded this needle's delete: it leaves the outbox."""
    async with db.transaction(lock=jobs.LOCK) as conn:
        await conn.execute(
            needle_deletes.delete().where(
                needle_deletes.c.media_id == row.media_id,
                needle_deletes.c.volume_id == row.volume_id,
                needle_deletes.c.alt_key == row.alt_key,
            )
        )


def order(rows: Iterable[VariantRow]) -> list[VariantRow]:
    """The variants a re-key rewrites, in the order that lets a playlist name the new URLs
    of what it lists: descending rendition (segments, rung playlists, photos, the master);
    never the original."""
    return sorted(
        (r for r in rows if r.rendition != v.ORIGINAL),
        key=lambda r: (r.rendition, r.fmt),
        reverse=True,
    )


def url_path(row: VariantRow, media_id: int, cookie: int) -> str:
    return photo_path(row.volume_id, media_id, cookie, row.rendition, Format(row.fmt))


def rewrite_playlist(text: bytes, moved: dict[str, str]) -> bytes:
    """An HLS playlist with each URI line found in `moved` (old path -> new path)
    replaced; every other line as it was."""
    out = []
    for line in text.split(b"\n"):
        stripped = line.rstrip(b"\r")
        new = moved.get(stripped.decode("ascii", "replace"))
        out.append(line if new is None else new.encode("ascii") + line[len(stripped) :])
    return b"\n".join(out)
