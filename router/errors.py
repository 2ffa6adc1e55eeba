"""The router's exception tree, under `common.errors.PinholeError`. The router answers its
hot path with responses built once from these classes' `status` and `code`."""

from __future__ import annotations

from common.errors import PinholeError


class RouterError(PinholeError):
    """Base of the router's errors."""


class DirectoryUnavailable(RouterError):
    """The directory did not answer usefully and nothing usable was cached."""

    status = 503
    code = "directory_unavailable"
    retry_after_s = 1.0
