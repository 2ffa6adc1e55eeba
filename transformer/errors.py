"""The transformer's exception tree, under `common.errors.PinholeError`. `Rejected` is bad
input: the API answers it (in its one error middleware) with its `status` (a 4xx), `code`
and `message`, and nothing is stored."""

from __future__ import annotations

from common.errors import PinholeError


class TransformerError(PinholeError):
    """Base of the transformer's errors."""


class Rejected(TransformerError):
    """Bad input. `code` is stable (clients branch on it), `message` one sentence for a
    person, `status` the HTTP status it maps to."""

    def __init__(self, code: str, message: str, *, status: int = 422) -> None:
        super().__init__(message, code=code, status=status)


class TranscodeFailed(TransformerError):
    """The tools failed on input that passed validation (a bug or a resource fault): the
    job is retried and dead-lettered after its last attempt."""
