"""The job framework's errors."""

from __future__ import annotations

from common.errors import PinholeError


class JobError(PinholeError):
    """Base of the job framework's errors."""


class UnknownJobKind(JobError):
    status = 400
    code = "unknown_job_kind"


class UnknownQueue(JobError):
    status = 400
    code = "unknown_queue"


class LeaseLost(JobError):
    """The job (or loop lease) is no longer this worker's: it must stop what it does."""

    status = 409
    code = "lease_lost"
