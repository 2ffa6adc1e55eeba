"""A job as the queue hands it out: a frozen snapshot of its row, with typed states.

queued -> running (claimed under a lease) -> done
                                         -> queued (a failure backing off, a deferral, or
                                            a lease that ran out and was taken over)
                                         -> dead (the failure that used the last attempt;
                                            `retry` queues it again)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"

    @property
    def is_final(self) -> bool:
        """Nothing runs it again unless an operator retries it (dead) or never (done)."""
        return self in (JobState.DONE, JobState.DEAD)


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the jobs table. `subject_id` is what the job works on (a media, a post),
    `owner_id` whose it is when the kind needs that (a post's author); `priority` (lower
    first) and `weight` (smaller first) order the claim before `run_after_unix_s`."""

    job_id: int
    queue: str
    kind: str
    subject_id: int
    owner_id: int | None
    dedupe_key: str
    priority: int
    weight: int
    state: JobState
    attempts: int
    attempts_max: int
    run_after_unix_s: float
    lease_owner: str | None
    lease_expires_unix_s: float | None
    last_error: str | None
    created_unix_s: float
    updated_unix_s: float

    @classmethod
    def from_row(cls, row: Any) -> Job:
        values = {name: row._mapping[name] for name in _FIELDS}
        values["state"] = JobState(values["state"])
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        """JSON-safe: ids as decimal strings (they exceed 2^53)."""
        doc = dataclasses.asdict(self)
        doc["state"] = str(self.state)
        for name in ("job_id", "subject_id", "owner_id"):
            if doc[name] is not None:
                doc[name] = str(doc[name])
        return doc


_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
