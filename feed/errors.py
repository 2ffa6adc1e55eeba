"""The feed's exception tree, under `common.errors.PinholeError`: a bad cursor from a client
(400 `bad_cursor`) and the hot store's connection failures (unclassified: a 500)."""

from __future__ import annotations

from common.errors import PinholeError


class FeedError(PinholeError):
    """Base of the feed's errors."""


class BadCursor(FeedError):
    """A cursor this API did not make, or one out of range."""

    status = 400
    code = "bad_cursor"
