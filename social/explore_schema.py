"""Explore's table and migrations, a component of its own ("explore"; docs/api/explore.md).

- `explore_lists`: one row per account with a precomputed Explore list: the post ids best
  first, as decimal text separated by commas (at most [explore] list_posts_max), and when
  it was computed. A page read slices it and re-checks visibility (social/explore.py).

The refresh job is a `LeasedLoop`, so the migration creates `job_leases` when missing. A
change is a new migration appended to MIGRATIONS.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from common.db import Migration
from common.jobs.schema import leases_create_steps

COMPONENT: Final = "explore"

metadata = sa.MetaData()

explore_lists = sa.Table(
    "explore_lists",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("computed_unix_s", sa.Float, nullable=False),
    sa.Column("post_ids", sa.Text, nullable=False),
)

MIGRATIONS: Final = (
    Migration(
        1, "explore: precomputed lists", [CreateTable(explore_lists), *leases_create_steps()]
    ),
)
