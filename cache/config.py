"""The cache node's configuration: the [cache] table of pinhole.toml.

Every limit of the cache is here, named with its qualifier last: ``cache_bytes_max`` (RAM
held by cached bodies), ``item_bytes_max`` (largest body that is cached; larger ones are
served but not kept), ``inflight_fetches_max`` (distinct store reads in flight; a miss
beyond it answers 503), ``negative_entries_max`` (remembered 404s), ``response_bytes_max``
(largest body read from a store node), plus the HTTP layer's limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.config import build

DEFAULT_PORT: Final = 8750
MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # How the directory names this node ("" = "cache-<host>:<port>").
    node_id: str = ""
    # The directory to heartbeat to and report bad replicas to ("" = standalone).
    directory_url: str = ""
    # The URL routers reach this node at ("" = http://host:port).
    advertise_url: str = ""
    # The cluster secret; when unset, PINHOLE_CLUSTER_SECRET (wired by the command line).
    cluster_secret_file: Path | None = None
    cache_bytes_max: int = 256 * MiB
    item_bytes_max: int = 8 * MiB
    # Largest body accepted from a store node: at least the store's needle_data_bytes_max,
    # or an original a worker reads through this cache would not pass (ops/limits_check.py
    # refuses such a configuration). Bodies over item_bytes_max are relayed, not cached.
    response_bytes_max: int = 256 * MiB
    # Each replica gets this long to answer a read before the next one is tried.
    fetch_timeout_s: float = 2.0
    # Distinct store reads in flight at once (concurrent misses on one needle share one).
    inflight_fetches_max: int = 1024
    # A needle no replica has is remembered as absent for this long, at most
    # negative_entries_max of them.
    negative_ttl_s: float = 5.0
    negative_entries_max: int = 100_000
    heartbeat_interval_s: float = 1.0
    # Open connections to one store node at most.
    store_connections_max: int = 256
    # HTTP layer limits (see common.leanhttp.HttpLimits).
    request_header_bytes_max: int = 16 * 1024
    connections_max: int = 10_000
    keepalive_idle_s_max: float = 75.0

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError("port must be within 0..65535")
        for name in (
            "cache_bytes_max",
            "item_bytes_max",
            "response_bytes_max",
            "inflight_fetches_max",
            "negative_entries_max",
            "store_connections_max",
            "request_header_bytes_max",
            "connections_max",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.item_bytes_max > self.cache_bytes_max:
            raise ValueError("item_bytes_max must not exceed cache_bytes_max")
        for name in ("fetch_timeout_s", "heartbeat_interval_s", "keepalive_idle_s_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.negative_ttl_s < 0:
            raise ValueError("negative_ttl_s must not be negative")
        for name in ("directory_url", "advertise_url"):
            url = getattr(self, name)
            if url and not url.startswith("http://"):
                raise ValueError(f"{name} must be an http:// URL")

    @property
    def name(self) -> str:
        return self.node_id or f"cache-{self.host}:{self.port}"


def cache_config(document: dict[str, Any], **overrides: Any) -> CacheConfig:
    """The [cache] table of a parsed pinhole.toml, with command-line overrides (None values
    ignored) on top. Raises common.config.ConfigError."""
    table = dict(document.get("cache", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(CacheConfig, table, where="cache.")
