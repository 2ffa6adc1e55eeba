"""The social layer's one exception tree, under `common.errors.PinholeError`. Each error
carries its HTTP status and a stable code (and RateLimited its X-RateLimit-* headers);
api/errors.py answers any of them from those attributes alone."""

from __future__ import annotations

from common.errors import PinholeError, rate_limit_headers


class SocialError(PinholeError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class Invalid(SocialError):
    """Bad input: a field out of its rules or limits."""


class AuthFailed(SocialError):
    status = 401
    code = "unauthorized"


class Forbidden(SocialError):
    status = 403
    code = "forbidden"


class NotVisible(SocialError):
    """Absent, deleted, or not visible to the viewer: the same answer for all three."""

    status = 404
    code = "not_found"


class SocialConflict(SocialError):
    """The request clashes with the current state (a name taken, a change made meanwhile)."""

    status = 409
    code = "conflict"


class RateLimited(SocialError):
    """429 with X-RateLimit-* of the limit that was hit; Retry-After and X-RateLimit-Reset
    are both the whole seconds the message names (int(reset_s) + 1)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, limit: int, reset_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.reset_s = reset_s

    def headers(self) -> dict[str, str]:
        headers = rate_limit_headers(self.limit, 0, self.reset_s)
        headers["Retry-After"] = headers["X-RateLimit-Reset"]
        return headers
