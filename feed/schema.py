"""The feed's one table: durable fan-out jobs (docs/formats/social-schema.md).

A `publish` job is inserted in the transaction that records its post, a `retract` job in
the one that deletes it (BRIEF §4), so no acknowledged post misses its fan-out."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db import Migration

COMPONENT: Final = "feed"

metadata = sa.MetaData()

jobs = sa.Table(
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

_indexes = (sa.Index("feed_jobs_claim", jobs.c.state, jobs.c.run_after_unix_s, jobs.c.job_id),)

MIGRATIONS: Final = (
    Migration(
        1,
        "feed jobs",
        [CreateTable(t) for t in metadata.sorted_tables] + [CreateIndex(i) for i in _indexes],
    ),
)
