"""Durable jobs and leased loops on the metadata database (SQLite or PostgreSQL).

Invariants, in one place:
- One table (`jobs`, common/jobs/schema.py) holds every queue's jobs; a `queue` column
  names the queue. The owning package registers its queue and kinds (kind.py) and creates
  the table in its migrations; a job is enqueued inside the transaction of what it is for.
- A job is run only under a lease: `claim` sets state running, lease owner and expiry and
  counts the attempt, in a write transaction whose UPDATE re-checks the row is runnable, so
  no two workers hold a job at once. Every later change (renew, finish, defer, fail) is
  conditional on the lease and reports when it was lost. A lease that runs out makes the
  job runnable again: handlers must be idempotent.
- Claim order within a queue: priority, weight, run_after, job id (lower first).
- A failed attempt backs off exponentially with jitter (rng injectable); the attempt that
  reaches attempts_max dead-letters the job until an operator retries it. A deferral is not
  an attempt.
- Time comes from a `Clock` (clock.py): tests drive leases and backoffs with `ManualClock`.
- A `LeasedLoop` runs its pass in one process at a time (a row of `job_leases`), renewing
  the lease while the pass runs and cancelling the pass when the lease is lost.
- Stopping waits a bounded time for the job or pass in hand, then cancels it.

The durable side (queue, runner, leased loop) needs SQLAlchemy; node-local work
(`common.jobs.local`) does not, so the names below load on first use and a store node that
imports only `common.jobs.local` never loads the database layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.jobs.clock import Clock, ManualClock, SystemClock
    from common.jobs.errors import JobError, LeaseLost, UnknownJobKind, UnknownQueue
    from common.jobs.job import Job, JobState
    from common.jobs.kind import KINDS, JobKind, JobQueue, RetryPolicy, register, register_queue
    from common.jobs.lease import LeasedLoop
    from common.jobs.queue import JobStore, QueueDepth, QueueStatistics, enqueue
    from common.jobs.runner import Defer, JobLease, JobRunner

_HOMES = {
    "clock": ("Clock", "ManualClock", "SystemClock"),
    "errors": ("JobError", "LeaseLost", "UnknownJobKind", "UnknownQueue"),
    "job": ("Job", "JobState"),
    "kind": ("KINDS", "JobKind", "JobQueue", "RetryPolicy", "register", "register_queue"),
    "lease": ("LeasedLoop",),
    "queue": ("JobStore", "QueueDepth", "QueueStatistics", "enqueue"),
    "runner": ("Defer", "JobLease", "JobRunner"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'common.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"common.jobs.{module}"), name)


__all__ = [
    "KINDS",
    "Clock",
    "Defer",
    "Job",
    "JobError",
    "JobKind",
    "JobLease",
    "JobQueue",
    "JobRunner",
    "JobState",
    "JobStore",
    "LeaseLost",
    "LeasedLoop",
    "ManualClock",
    "QueueDepth",
    "QueueStatistics",
    "RetryPolicy",
    "SystemClock",
    "UnknownJobKind",
    "UnknownQueue",
    "enqueue",
    "register",
    "register_queue",
]
