"""The root of every package's exception tree.

Each package (api, social, feed, transformer, directory, cache, router, replica, store, f4)
keeps its own tree under one base class deriving from `PinholeError`; a class says how a
service answers it (`status`, a stable `code` clients branch on, an optional Retry-After and
extra headers), and each service translates errors to HTTP in exactly one place, its error
middleware, from these attributes alone: no service branches on another package's classes.
"""

from __future__ import annotations

import math


class PinholeError(Exception):
    """`status` is the HTTP status a service answers (0: the peer was not reached), `code`
    a stable machine-readable word, `message` one sentence for a person."""

    status: int = 500
    code: str = "internal"
    # Seconds for Retry-After; None: no header.
    retry_after_s: float | None = None

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """The response headers this error adds (Retry-After; subclasses add more)."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": retry_after_header(self.retry_after_s)}


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, rounded up and at least 1 (0 invites a busy loop)."""
    return str(max(1, math.ceil(seconds)))


def rate_limit_headers(limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    """X-RateLimit-Limit / -Remaining / -Reset (seconds until the window resets)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(int(reset_s) + 1),
    }
