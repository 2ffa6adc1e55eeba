"""The cache package's exception tree. ``cache.http_api`` turns every `PinholeError` (these
and the replica reader's, replica/errors.py) into an HTTP answer in one place, from its
`status`, `code` and `headers()`."""

from __future__ import annotations

from common.errors import PinholeError

__all__ = ["CacheError", "CacheRequestError"]


class CacheError(PinholeError):
    """Base of the cache's errors."""


class CacheRequestError(CacheError):
    """A request the cache's API refuses: status, code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code, status=status)
