"""The job framework's two tables, defined once. The packages that use them create them in
their own migrations (`jobs_create_steps`, `leases_create_steps`; every statement is IF NOT
EXISTS), so a database holds them once whichever component migrates first.

- `jobs`: every queue's jobs in one row shape (ids BIGINT, times Unix seconds as float).
  `dedupe_key` is unique per queue: enqueueing a job twice for the same subject fails
  inside the caller's transaction.
- `job_leases`: named leases of `LeasedLoop`s (one holder at a time until expiry).
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable, ExecutableDDLElement

STATE_CHARS_MAX: Final = 8
NAME_CHARS_MAX: Final = 32
DEDUPE_KEY_CHARS_MAX: Final = 100
HOLDER_CHARS_MAX: Final = 200

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("queue", sa.String(NAME_CHARS_MAX), nullable=False),
    sa.Column("kind", sa.String(NAME_CHARS_MAX), nullable=False),
    sa.Column("subject_id", sa.BigInteger, nullable=False),
    sa.Column("owner_id", sa.BigInteger, nullable=True),
    sa.Column("dedupe_key", sa.String(DEDUPE_KEY_CHARS_MAX), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("weight", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(STATE_CHARS_MAX), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("attempts_max", sa.Integer, nullable=False),
    sa.Column("run_after_unix_s", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(HOLDER_CHARS_MAX), nullable=True),
    sa.Column("lease_expires_unix_s", sa.Float, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("updated_unix_s", sa.Float, nullable=False),
    sa.UniqueConstraint("queue", "dedupe_key", name="jobs_dedupe"),
)

leases = sa.Table(
    "job_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(HOLDER_CHARS_MAX), nullable=False),
    sa.Column("expires_unix_s", sa.Float, nullable=False),
)

# The claim's order: (queue, state) first, then the order of queue.claim.
_indexes: Final = (
    sa.Index(
        "jobs_claim",
        jobs.c.queue,
        jobs.c.state,
        jobs.c.priority,
        jobs.c.weight,
        jobs.c.run_after_unix_s,
        jobs.c.job_id,
    ),
    sa.Index("jobs_subject", jobs.c.queue, jobs.c.subject_id),
)


def jobs_create_steps() -> list[ExecutableDDLElement]:
    """The statements that create the jobs table and its indexes when missing."""
    return [
        CreateTable(jobs, if_not_exists=True),
        *(CreateIndex(i, if_not_exists=True) for i in _indexes),
    ]


def leases_create_steps() -> list[ExecutableDDLElement]:
    """The statement that creates the leases table when missing."""
    return [CreateTable(leases, if_not_exists=True)]
