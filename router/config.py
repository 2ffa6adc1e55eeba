"""The router's configuration: the [router] table of pinhole.toml, parsed once at start-up.

Durations are seconds, sizes bytes. Every limit is named and checked here, so a router
with a nonsensical config does not start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.config import ConfigError, build

DEFAULT_PORT: Final = 8780
MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RouterConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Where logical volumes are looked up and the cache nodes listed.
    directory_url: str = "http://127.0.0.1:8700"
    # The cluster secret (read-repair reports to the directory carry the internal
    # credential); when unset, PINHOLE_CLUSTER_SECRET or ./.pinhole/cluster.secret.
    cluster_secret_file: Path | None = None
    # A volume lookup is reused for this long; an unknown volume is remembered for
    # unknown_volume_ttl_s (short: a volume created a moment ago must appear soon). While
    # the directory cannot be reached, an expired lookup keeps serving for at most
    # lookup_stale_s_max. At most lookups_cached_max volumes and unknown_volumes_cached_max
    # unknown ones are remembered. Ids above the directory's highest are looked up by one
    # probe at a time, at most one per lookup_probe_s_min (router/lookup.py).
    lookup_ttl_s: float = 5.0
    unknown_volume_ttl_s: float = 1.0
    lookup_stale_s_max: float = 300.0
    lookups_cached_max: int = 100_000
    unknown_volumes_cached_max: int = 10_000
    lookup_probe_s_min: float = 0.05
    directory_timeout_s: float = 2.0
    # The list of alive cache nodes is fetched this often.
    caches_refresh_s: float = 2.0
    # One request to a cache node (which may itself fetch from stores, failing over between
    # replicas): beyond this the cache counts as failed for the request.
    cache_timeout_s: float = 5.0
    # A cache node that failed is skipped for this long (its keys go to the next node in
    # the rendezvous order), and at most cache_attempts_max nodes are tried per request
    # before the router reads the replicas itself.
    cache_down_s: float = 2.0
    cache_attempts_max: int = 2
    # One read from a store replica when the router reads replicas directly.
    store_timeout_s: float = 2.0
    # Largest answer the router fetches from a cache or store (a bigger one is an error): at
    # least the largest upload, which workers read through the router
    # (ops/limits_check.py refuses a configuration where it is smaller).
    photo_bytes_max: int = 256 * MiB
    # Internal connections per cache or store node.
    connections_per_origin_max: int = 256
    # Read-repair reports to the directory in flight; beyond it reports are dropped (the
    # store's scrubber finds the bad copy later).
    repair_reports_inflight_max: int = 64
    # Request limits of the HTTP layer.
    request_header_bytes_max: int = 16 * 1024
    connections_max: int = 10_000
    keepalive_idle_s_max: float = 75.0

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError("port must be within 0..65535")
        if not self.directory_url.startswith("http://"):
            raise ValueError("directory_url must be an http:// URL")
        positive_s = (
            "lookup_ttl_s",
            "unknown_volume_ttl_s",
            "directory_timeout_s",
            "caches_refresh_s",
            "cache_timeout_s",
            "store_timeout_s",
            "keepalive_idle_s_max",
        )
        for name in positive_s:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("lookup_stale_s_max", "cache_down_s", "lookup_probe_s_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        positive = (
            "lookups_cached_max",
            "unknown_volumes_cached_max",
            "cache_attempts_max",
            "photo_bytes_max",
            "connections_per_origin_max",
            "repair_reports_inflight_max",
            "request_header_bytes_max",
            "connections_max",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


def router_config(document: dict[str, Any], **overrides: Any) -> RouterConfig:
    """The [router] table of a parsed pinhole.toml, command-line overrides (None: not
    given) on top."""
    table = document.get("router", {})
    if not isinstance(table, dict):
        raise ConfigError("router must be a table")
    table = {**table, **{k: v for k, v in overrides.items() if v is not None}}
    return build(RouterConfig, table, where="router.")
