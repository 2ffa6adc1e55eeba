"""The feed's migrations: its fan-out jobs live in the job framework's table
(common/jobs/schema.py) since migration 2, which moved the rows of the feed's own table
(`feed_jobs`, kept here for the migrations that create and empty it)."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from common.db import Migration
from common.jobs import schema as job_schema
from feed.config import FeedConfig

COMPONENT: Final = "feed"

metadata = sa.MetaData()

_feed_jobs_v1 = sa.Table(
    "feed_jobs",
    metadata,
    sa.Column("job_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),  # publish | retract
    sa.Column("post_id", sa.BigInteger, nullable=False),
    sa.Column("author_id", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # queued | running | done | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("run_after_unix_s", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_expires_unix_s", sa.Float, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("updated_unix_s", sa.Float, nullable=False),
    sa.UniqueConstraint("kind", "post_id", name="feed_jobs_post"),
)

_indexes = (
    sa.Index(
        "feed_jobs_claim",
        _feed_jobs_v1.c.state,
        _feed_jobs_v1.c.run_after_unix_s,
        _feed_jobs_v1.c.job_id,
    ),
)


def _move_feed_jobs() -> list[sa.Executable]:
    """Migration 2: the fan-out jobs into the framework's table (queue "feed", the author
    as owner, "kind:post" as dedupe key, no priority or weight: claimed due first), then
    the old table dropped. The attempt budget is the feed's default."""
    old = _feed_jobs_v1.c
    moved = sa.select(
        old.job_id,
        sa.literal("feed", sa.String),
        old.kind,
        old.post_id,
        old.author_id,
        old.kind + ":" + sa.cast(old.post_id, sa.String(100)),
        sa.literal(0, sa.Integer),
        sa.literal(0, sa.BigInteger),
        old.state,
        old.attempts,
        sa.literal(FeedConfig().attempts_max, sa.Integer),
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
        DropTable(_feed_jobs_v1),
    ]


MIGRATIONS: Final = (
    Migration(
        1,
        "feed jobs",
        [CreateTable(_feed_jobs_v1), *(CreateIndex(i) for i in _indexes)],
    ),
    Migration(2, "fan-out jobs move to the job framework's table", _move_feed_jobs()),
)
