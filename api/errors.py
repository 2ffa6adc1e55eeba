"""The API's errors and the one middleware that turns every error into
`{"error": {"code": "...", "message": "..."}}` (BRIEF §8).

Every package's errors derive from `common.errors.PinholeError` and say how they are
answered: `status`, `code`, `message` and `headers()` (Retry-After, X-RateLimit-*). The
middleware answers any of them from those attributes alone, adding WWW-Authenticate to a
401; a 5xx raised below the API (the storage refusing an upload) is logged, the API's own
5xx (load shedding) are not. aiohttp's HTTP errors (404 unknown route, 405, 413 body too
large) keep their status; anything else is logged and answered 500 `internal` (a 5xx is a
bug). tus responses carry `Tus-Resumable` on errors too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from common.errors import PinholeError, rate_limit_headers

log = logging.getLogger("pinhole.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(PinholeError):
    status = 400
    code = "bad_request"


class BadApiRequest(ApiError):
    status = 400
    code = "bad_request"


class NotAuthenticated(ApiError):
    status = 401
    code = "unauthorized"


class NoSuchResource(ApiError):
    """The path names a resource (a media id, a session, a user) that does not exist."""

    status = 404
    code = "not_found"


class TooLarge(ApiError):
    status = 413
    code = "body_too_large"


class UploadsBusy(ApiError):
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

    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self.limit, self.remaining, self.reset_s) | super().headers()


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _pinhole_error_response(request: web.Request, e: PinholeError) -> web.Response:
    if not 400 <= e.status <= 599 or e.code == PinholeError.code:
        # A peer not reached (status 0) or an error nobody classified: a fault like any other.
        log.error("request %s %s failed", request.method, request.path, exc_info=e)
        return error_response(500, "internal", "internal server error")
    if e.status >= 500 and not isinstance(e, ApiError):
        log.error("%s %s refused: %s", request.method, request.path, e.message)
    response = error_response(e.status, e.code, e.message)
    response.headers.update(e.headers())
    if e.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pinhole"'
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PinholeError as e:
        response = _pinhole_error_response(request, e)
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
