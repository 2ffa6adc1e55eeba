"""The media pipeline's tables and their migrations (docs/formats/media-schema.md).

Media ids and keys are Instagram-style ids (common/ids.py, < 2^63 until 2060), stored as
BIGINT. Cookies are u64: stored as 16 hex digits. Times are Unix seconds (float). A change
to a table is a new migration appended to MIGRATIONS, never an edit of an applied one.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from common.db import Migration
from common.jobs import schema as job_schema

COMPONENT: Final = "media"

metadata = sa.MetaData()


def _media_v1_columns() -> list[sa.Column[Any]]:
    """The media table as migration 1 created it (fresh Column objects on every call: one
    Column belongs to one Table)."""
    return [
        sa.Column("media_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(8), nullable=False),  # image | video
        # processing -> ready | failed; any -> expired (unattached too long) | deleted
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("fmt", sa.Integer, nullable=False),  # the original's format code
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),  # as displayed (orientation applied)
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("filter_id", sa.String(32), nullable=True),
        # The cookie of every published variant: public URLs carry it, signed ones a
        # masked form (common/signed_photo.py).
        sa.Column("cookie_hex", sa.String(16), nullable=False),
        sa.Column("original_volume_id", sa.BigInteger, nullable=False),
        sa.Column("placeholder", sa.String(64), nullable=True),  # blurhash
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("created_unix_s", sa.Float, nullable=False),
        sa.Column("ready_unix_s", sa.Float, nullable=True),
        sa.Column("expires_unix_s", sa.Float, nullable=True),  # None once attached to a post
        sa.Column("attached_unix_s", sa.Float, nullable=True),
    ]


media = sa.Table(
    "media",
    metadata,
    *_media_v1_columns(),
    # Migration 2. The original's own cookie, which no URL a viewer sees carries (NULL for
    # media stored before: their original shares cookie_hex and the router alone keeps it
    # private). pending_cookie_hex: set while a re-key rewrites the variants under a new
    # cookie (the owner turned private: URLs handed out while public must stop working).
    sa.Column("original_cookie_hex", sa.String(16), nullable=True),
    sa.Column("pending_cookie_hex", sa.String(16), nullable=True),
    # Migration 5. Raised by the database itself (triggers on media_variants) in the
    # transaction of every insert, update and delete of the media's variant rows: a reader
    # that has the ladder of (media_id, ladder_version) need not read it again
    # (social/post_batch.py). No writer sets it.
    sa.Column("ladder_version", sa.BigInteger, nullable=False, server_default="0"),
)

variants = sa.Table(
    "media_variants",
    metadata,
    sa.Column("media_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("rendition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("fmt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("volume_id", sa.BigInteger, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
)

# Every column of media_variants, key first: a page's ladders (post_batch, 12 rows per
# photo) are read from this index alone, without a table lookup per row. Measured on
# SQLite, 200,000 media x 12 variants, 20 media a read: 505 -> 179 us (ARCHITECTURE.md,
# "A feed page's variant rows read from one index").
variants_cover = sa.Index(
    "media_variants_cover",
    variants.c.media_id,
    variants.c.rendition,
    variants.c.fmt,
    variants.c.volume_id,
    variants.c.size_bytes,
    variants.c.width,
    variants.c.height,
)

# A re-key's variants written under the new cookie so far (the shape of media_variants):
# a re-run skips them; the re-key's last transaction moves them into media_variants.
rekey_variants = sa.Table(
    "media_rekey_variants",
    metadata,
    sa.Column("media_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("rendition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("fmt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("volume_id", sa.BigInteger, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
)

# Needles nothing references any more whose delete the directory has not recorded yet
# (a re-key's old variants): an outbox, drained by the workers.
needle_deletes = sa.Table(
    "media_needle_deletes",
    metadata,
    sa.Column("media_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("volume_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("alt_key", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

# The media queue's table until migration 3 moved its rows to the job framework's table
# (common/jobs/schema.py); kept for the migrations that create and empty it.
_media_jobs_v1 = sa.Table(
    "media_jobs",
    metadata,
    sa.Column("job_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("media_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),  # photo | video | rekey
    # Lower lanes first: photos (0) ahead of video (1); within a lane smaller first.
    sa.Column("lane", sa.Integer, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # queued | running | done | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("attempts_max", sa.Integer, nullable=False),
    sa.Column("run_after_unix_s", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_expires_unix_s", sa.Float, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("updated_unix_s", sa.Float, nullable=False),
)

_indexes = (
    sa.Index("media_owner", media.c.owner_id, media.c.media_id),
    sa.Index("media_expiry", media.c.status, media.c.expires_unix_s),
    sa.Index(
        "media_jobs_claim",
        _media_jobs_v1.c.state,
        _media_jobs_v1.c.lane,
        _media_jobs_v1.c.size_bytes,
        _media_jobs_v1.c.job_id,
    ),
)


def _move_media_jobs() -> list[sa.Executable]:
    """Migration 3: the media jobs into the framework's table (queue "media", lane as
    priority, size as weight, the media id as dedupe key), then the old table dropped."""
    old = _media_jobs_v1.c
    moved = sa.select(
        old.job_id,
        sa.literal("media", sa.String),
        old.kind,
        old.media_id,
        sa.null(),
        sa.cast(old.media_id, sa.String(100)),
        old.lane,
        old.size_bytes,
        old.state,
        old.attempts,
        old.attempts_max,
        old.run_after_unix_s,
        old.lease_owner,
        old.lease_expires_unix_s,
        old.last_error,
        old.created_unix_s,
        old.updated_unix_s,
    )
    return [
        *job_schema.jobs_create_steps(),
        job_schema.jobs.insert().from_select(list(job_schema.jobs.c.keys()), moved),
        DropTable(_media_jobs_v1),
    ]


_LADDER_EVENTS: Final = (("insert", "NEW"), ("update", "NEW"), ("delete", "OLD"))


async def _ladder_version(conn: AsyncConnection) -> None:
    """Migration 5: media.ladder_version, raised by triggers on media_variants. An update
    that moved a variant row to another media (none does) raises both media's versions."""
    await conn.execute(
        sa.text("ALTER TABLE media ADD COLUMN ladder_version BIGINT NOT NULL DEFAULT 0")
    )
    if conn.dialect.name == "postgresql":
        # SET search_path FROM CURRENT: the function's `media` is the table of the schema
        # it was created in, whatever a later session's search_path says.
        await conn.execute(
            sa.text(
                "CREATE FUNCTION media_ladder_bump() RETURNS trigger LANGUAGE plpgsql"
                " SET search_path FROM CURRENT AS $$ BEGIN"
                " IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.media_id <> NEW.media_id)"
                " THEN UPDATE media SET ladder_version ="
                " ladder_version + 1 WHERE media_id = OLD.media_id; END IF;"
                " IF TG_OP <> 'DELETE' THEN UPDATE media SET ladder_version ="
                " ladder_version + 1 WHERE media_id = NEW.media_id; END IF;"
                " RETURN NULL; END $$"
            )
        )
        await conn.execute(
            sa.text(
                "CREATE TRIGGER media_ladder_bump AFTER INSERT OR UPDATE OR DELETE"
                " ON media_variants FOR EACH ROW EXECUTE FUNCTION media_ladder_bump()"
            )
        )
        return
    for event, row in _LADDER_EVENTS:
        moved = (
            " UPDATE media SET ladder_version = ladder_version + 1"
            " WHERE media_id = OLD.media_id AND OLD.media_id <> NEW.media_id;"
            if event == "update"
            else ""
        )
        await conn.execute(
            sa.text(
                f"CREATE TRIGGER media_ladder_{event} AFTER {event.upper()} ON media_variants"
                " FOR EACH ROW BEGIN UPDATE media SET ladder_version = ladder_version + 1"
                f" WHERE media_id = {row}.media_id;{moved} END"
            )
        )


MIGRATIONS: Final = (
    Migration(
        1,
        "media, variants, jobs",
        [
            CreateTable(sa.Table("media", sa.MetaData(), *_media_v1_columns())),
            CreateTable(variants),
            CreateTable(_media_jobs_v1),
        ]
        + [CreateIndex(i) for i in _indexes],
    ),
    Migration(
        2,
        "the original's own cookie, re-keys and their needle deletes",
        [
            sa.text("ALTER TABLE media ADD COLUMN original_cookie_hex VARCHAR(16)"),
            sa.text("ALTER TABLE media ADD COLUMN pending_cookie_hex VARCHAR(16)"),
            CreateTable(rekey_variants),
            CreateTable(needle_deletes),
        ],
    ),
    Migration(3, "media jobs move to the job framework's table", _move_media_jobs()),
    Migration(
        4,
        "media_variants covered by one index",
        [CreateIndex(variants_cover)],
    ),
    Migration(5, "media.ladder_version raised by the variants' triggers", _ladder_version),
)
