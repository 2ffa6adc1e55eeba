"""The cache package's exceptions. ``cache.http_api`` turns them into HTTP answers in one
place; the router turns the replica-read ones into its own answers."""

from __future__ import annotations

__all__ = ["CacheError", "NeedleAbsent", "ReplicaReadError", "ReplicasUnavailable"]


class CacheError(Exception):
    """Base of the cache's errors."""


class ReplicaReadError(CacheError):
    """No replica served a good copy.

    bad: replicas whose copy is corrupt (500 corrupt_needle or a body that does not match
    its ETag): they need a repair. failed: replicas that did not answer usefully (connect
    error, timeout, 5xx, volume not on the node).
    """

    def __init__(self, message: str, *, bad: list[str], failed: list[str]) -> None:
        super().__init__(message)
        self.bad = bad
        self.failed = failed


class NeedleAbsent(ReplicaReadError):
    """At least one replica answered a clean 404 and none had the needle. ``certain`` is
    True when every replica answered 404 (a failed replica might still hold it otherwise)."""

    @property
    def certain(self) -> bool:
        return not self.failed and not self.bad


class ReplicasUnavailable(ReplicaReadError):
    """No replica answered with the needle or a clean 404."""
