"""The replica reader's exception tree. The cache and the router each turn these into their
own answers in their one error middleware (`status`/`code` are those a cache answers)."""

from __future__ import annotations

from common.errors import PinholeError

__all__ = ["NeedleAbsent", "ReplicaReadError", "ReplicasUnavailable"]


class ReplicaReadError(PinholeError):
    """No replica served a good copy.

    bad: replicas whose copy is corrupt (500 corrupt_needle or a body that does not match
    its ETag): they need a repair. failed: replicas that did not answer usefully (connect
    error, timeout, 5xx, volume not on the node).
    """

    status = 502
    code = "replicas_unavailable"

    def __init__(self, message: str, *, bad: list[str], failed: list[str]) -> None:
        super().__init__(message)
        self.bad = bad
        self.failed = failed


class NeedleAbsent(ReplicaReadError):
    """At least one replica answered a clean 404 and none had the needle. ``certain`` is
    True when every replica answered 404 (a failed replica might still hold it otherwise)."""

    status = 404
    code = "not_found"

    @property
    def certain(self) -> bool:
        return not self.failed and not self.bad


class ReplicasUnavailable(ReplicaReadError):
    """No replica answered with the needle or a clean 404."""
