"""The social layer's one exception tree. Each error carries its HTTP status and a stable
code; api/errors.py turns any SocialError into `{"error": {"code", "message"}}`."""

from __future__ import annotations


class SocialError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Invalid(SocialError):
    """Bad input: a field out of its rules or limits."""


class AuthFailed(SocialError):
    status = 401
    code = "unauthorized"


class Forbidden(SocialError):
    status = 403
    code = "forbidden"


class NotFound(SocialError):
    """Absent, deleted, or not visible to the viewer: the same answer for all three."""

    status = 404
    code = "not_found"


class Conflict(SocialError):
    status = 409
    code = "conflict"


class RateLimited(SocialError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, limit: int, reset_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.reset_s = reset_s
