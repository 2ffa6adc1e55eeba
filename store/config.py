"""The store node's configuration: the [store] table of pinhole.toml (see
pinhole.example.toml for every key with its default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from common.config import ConfigError, build
from store.volume_config import MiB, VolumeLimits

DEFAULT_PORT: Final = 8701


@dataclass(frozen=True, slots=True)
class StoreConfig:
    # Volume files live in <data_dir>/volumes.
    data_dir: Path = Path(".pinhole/store")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # How the directory and routers name this node, and where it sits for placement
    # (datacenter/rack/host).
    node_id: str = ""
    failure_domain: str = "dc1/rack1/host1"
    # The cluster secret; when unset, PINHOLE_CLUSTER_SECRET or <data_dir>/../cluster.secret.
    cluster_secret_file: Path | None = None
    volume: VolumeLimits = field(default_factory=VolumeLimits)
    # Page-cache misses in flight to the device (io_uring entries, or threads where io_uring
    # is unavailable): the node's disk queue depth. Misses waiting beyond read_queue_max
    # are refused with 503.
    read_queue_depth: int = 32
    read_queue_max: int = 4096
    # Volumes open on one node at most.
    volumes_max: int = 4096
    # Request limits of the HTTP layer. A PUT body is further capped by
    # volume.needle_data_bytes_max.
    request_header_bytes_max: int = 16 * 1024
    connections_max: int = 10_000
    keepalive_idle_s_max: float = 75.0
    # Background compaction: every compaction_check_interval_s (0: never), one volume at a
    # time whose garbage passes both thresholds, copying at most compaction_bytes_per_s_max.
    compaction_check_interval_s: float = 300.0
    compaction_garbage_ratio_min: float = 0.3
    compaction_garbage_bytes_min: int = 64 * MiB
    compaction_bytes_per_s_max: int = 100 * MiB

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536 and self.port != 0:
            raise ValueError("port must be within 0..65535")
        positive = ("read_queue_depth", "read_queue_max", "volumes_max", "connections_max")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 < self.compaction_garbage_ratio_min <= 1:
            raise ValueError("compaction_garbage_ratio_min must be within (0, 1]")
        if self.compaction_bytes_per_s_max <= 0:
            raise ValueError("compaction_bytes_per_s_max must be positive")
        if self.compaction_check_interval_s < 0:
            raise ValueError("compaction_check_interval_s must not be negative")

    @property
    def volumes_dir(self) -> Path:
        return self.data_dir / "volumes"

    @property
    def name(self) -> str:
        return self.node_id or f"{self.host}:{self.port}"


def store_config(document: dict[str, Any], **overrides: Any) -> StoreConfig:
    """The [store] table of a parsed pinhole.toml, with command-line overrides on top."""
    table = dict(document.get("store", {}))
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:
            outer, inner = key.split(".", 1)
            table[outer] = {**table.get(outer, {}), inner: value}
        else:
            table[key] = value
    if "volume" in table and not isinstance(table["volume"], dict):
        raise ConfigError("store.volume must be a table")
    return build(StoreConfig, table, where="store.")
