"""The API's errors and the one middleware that turns every error into
`{"error": {"code": "...", "message": "..."}}` (BRIEF §8).

ApiError carries its status and code (and Retry-After or X-RateLimit-* when it says so);
the transformer's Rejected (bad media) and the social layer's SocialError keep their own (a
429 with X-RateLimit-* and Retry-After); NoWritableVolume is a 503 with the Retry-After and
message it carries; aiohttp's HTTP errors (404 unknown route, 405, 413 body too large) keep
their status; anything else is logged and answered 500 `internal` (a 5xx is a bug). tus
responses carry `Tus-Resumable` on errors too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from directory.errors import NoWritableVolume
from feed.cursor import BadCursor
from social.errors import RateLimited, SocialError
from transformer.errors import Rejected

log = logging.getLogger("pinhole.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


# When the directory's NoWritableVolume does not say when to come back.
NO_WRITABLE_VOLUME_RETRY_S: Final = 10.0


class ApiError(Exception):
    status = 400
    code = "bad_request"
    # Seconds for Retry-After; None: no header.
    retry_after_s: float | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class TooLarge(ApiError):
    status = 413
    code = "body_too_large"


class Busy(ApiError):
    status = 503
    code = "busy"
    retry_after_s = 1.0


class BodyTooSlow(ApiError):
    """The body fell below the minimum rate: its slot goes to someone else at once (aiohttp
    then reads what is left of the body for at most its lingering time, 10 s, and closes
    the connection, as it does after any answer given before the whole body)."""

    status = 408
    code = "body_too_slow"


class StagingFull(ApiError):
    """The staging disk cannot take the upload now; uploads that end free it."""

    status = 503
    code = "staging_full"
    retry_after_s = 30.0


class QuotaExceeded(ApiError):
    """A user's upload quota of the sliding day is spent: 429 with X-RateLimit-* of the
    limit that was hit and Retry-After (when the oldest upload leaves the window)."""

    status = 429
    code = "upload_quota_exceeded"

    def __init__(self, message: str, *, limit: int, remaining: int, reset_s: float) -> None:
        super().__init__(message, retry_after_s=reset_s)
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s


def rate_headers(limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    """X-RateLimit-Limit / -Remaining / -Reset (seconds until the window resets)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(int(reset_s) + 1),
    }


def _retry_after(seconds: float) -> str:
    """Retry-After in whole seconds, rounded up and at least 1 (0 invites a busy loop)."""
    return str(max(1, math.ceil(seconds)))


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        response = error_response(e.status, e.code, e.message)
        if e.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="pinhole"'
        if isinstance(e, QuotaExceeded):
            response.headers.update(rate_headers(e.limit, e.remaining, e.reset_s))
        if e.retry_after_s is not None:
            response.headers["Retry-After"] = _retry_after(e.retry_after_s)
    except Rejected as e:
        response = error_response(e.status, e.code, e.message)
    except SocialError as e:
        response = error_response(e.status, e.code, e.message)
        if e.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="pinhole"'
        if isinstance(e, RateLimited):
            response.headers.update(rate_headers(e.limit, 0, e.reset_s))
            response.headers["Retry-After"] = str(int(e.reset_s) + 1)
    except BadCursor as e:
        response = error_response(400, "bad_cursor", str(e))
    except NoWritableVolume as e:
        # The writer's message says what it tried and why that failed (directory/writer.py).
        message = e.message or "storage is full or unavailable"
        retry_after_s = e.retry_after_s or NO_WRITABLE_VOLUME_RETRY_S
        log.error("upload refused: %s", message)
        response = error_response(503, "no_writable_volume", message)
        response.headers["Retry-After"] = _retry_after(retry_after_s)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        response = error_response(e.status, code, e.reason)
        if e.status == 405 and "Allow" in e.headers:
            response.headers["Allow"] = e.headers["Allow"]
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        response = error_response(500, "internal", "internal server error")
    if request.path.startswith("/api/v1/uploads"):
        response.headers["Tus-Resumable"] = "1.0.0"
    return response
