"""The store node's configuration: the [store] table of pinhole.toml (see
pinhole.example.toml for every key with its default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from common.config import ConfigError, build
from store.volume_config import MiB, VolumeLimits

DEFAULT_PORT: Final = 8701
# A directory may slow heartbeats down, but a node silent for longer than this would be
# declared down by any sensible node_timeout_s.
HEARTBEAT_INTERVAL_S_MAX: Final = 60.0


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
    # The cluster: the directory this node reports to with a heartbeat every
    # heartbeat_interval_s ("" = a standalone node: no heartbeat, no repair reports), and the
    # URL the directory hands out for it ("" = http://host:port with the bound port).
    directory_url: str = ""
    advertise_url: str = ""
    heartbeat_interval_s: float = 1.0
    # Scrubbing: every volume is verified once per scrub_interval_s (0: never) reading at
    # most scrub_bytes_per_s_max; corrupt live needles are reported to the directory.
    scrub_interval_s: float = 86400.0
    scrub_bytes_per_s_max: int = 8 * MiB
    # Volume copies (POST /volumes/{id}/pull) read from their source at most this fast
    # unless the request names its own rate.
    pull_bytes_per_s_max: int = 100 * MiB
    # One JSON access line per request on stderr (common/json_logs.py: written in batches,
    # about a microsecond a request); false leaves only the request metrics.
    access_log: bool = True
    # Page-cache hits of plain GETs answered by one C call (store/native: read, checks,
    # ETag); false, PINHOLE_STORE_NATIVE=0 or an extension that did not build leave every
    # read to the pure-Python path.
    native: bool = True

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
        for name in ("directory_url", "advertise_url"):
            url = getattr(self, name)
            if url and not _is_http_url(url):
                raise ValueError(f"{name} must be an http:// or https:// URL (or empty)")
        if not 0 < self.heartbeat_interval_s <= HEARTBEAT_INTERVAL_S_MAX:
            raise ValueError(
                f"heartbeat_interval_s must be within (0, {HEARTBEAT_INTERVAL_S_MAX}] seconds"
            )
        if self.scrub_interval_s < 0:
            raise ValueError("scrub_interval_s must not be negative")
        for name in ("scrub_bytes_per_s_max", "pull_bytes_per_s_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def volumes_dir(self) -> Path:
        return self.data_dir / "volumes"

    @property
    def name(self) -> str:
        return self.node_id or f"{self.host}:{self.port}"


def _is_http_url(url: str) -> bool:
    parsed = urlsplit(url)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and not parsed.query


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
