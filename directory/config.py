"""The directory's configuration: the [directory] table of pinhole.toml, parsed once with
common.config.build into a frozen, validated DirectoryConfig."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.config import build
from directory.placement import Placement

DEFAULT_PORT: Final = 8700
GiB: Final = 1024**3
MiB: Final = 1024**2


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    # The SQLite file <data_dir>/directory.sqlite3 lives here when database_url is empty.
    data_dir: Path = Path(".pinhole/directory")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # "" = SQLite in data_dir; else a postgresql+asyncpg:// URL (or any sqlite URL).
    database_url: str = ""
    # PostgreSQL only: the schema holding the directory's tables ("" = the default).
    database_schema: str = ""
    # SeaweedFS "xyz": x other DCs, y other racks in the same DC, z other hosts in the same
    # rack; a logical volume has 1+x+y+z replicas.
    placement: str = "011"
    # Told to nodes in every heartbeat answer.
    heartbeat_interval_s: float = 1.0
    # No heartbeat for this long = the node is down.
    node_timeout_s: float = 5.0
    # Period of the background loops (health, growth, deletes, repairs).
    health_interval_s: float = 1.0
    # Growth creates logical volumes while fewer than this are writable (and capacity remains).
    writable_volumes_min: int = 2
    # At most this many logical volumes are created by one growth pass or one POST /volumes.
    volumes_create_max: int = 16
    # A write-failure report keeps a logical volume read-only at least this long.
    readonly_cooldown_s: float = 10.0
    # A store node with less free space than this gets no new volume.
    node_free_bytes_min: int = GiB
    # A store node holds at most this many replicas.
    volumes_per_node_max: int = 1000
    # Backoff cap between two attempts of a pending delete or repair.
    delete_retry_s_max: float = 30.0
    # A repair that failed this many times is given up (state failed, listed for operators).
    repair_attempts_max: int = 20
    # A background loop's lease: another directory process takes the loop over when the
    # holder has not renewed it for this long.
    lease_s: float = 5.0
    # Timeout of one call to a store or cache node.
    node_request_timeout_s: float = 10.0
    # Store / cache calls in flight at once from one loop pass.
    node_requests_inflight_max: int = 32
    # Request bodies (a heartbeat lists every volume of its node).
    request_body_bytes_max: int = 4 * MiB
    # Rows one delete or repair pass handles; the rest wait for the next pass.
    loop_batch_max: int = 500
    # Finished repairs listed by GET /repairs.
    repairs_listed_max: int = 200
    # Moves one GET /plan/* answer proposes at most.
    plan_moves_max: int = 1000
    # Volume lookups (GET /volumes/{vid}, /caches) are answered from a snapshot of the state
    # at most lookup_snapshot_s old, loaded by one request at a time. A volume id above the
    # snapshot's highest reads the database's highest id (one indexed query, at most once
    # per lookup_reload_s_min) and reloads the snapshot only when a volume was created
    # since: a flood of unknown ids costs at most 1 / lookup_reload_s_min cheap queries a
    # second and no state load.
    lookup_snapshot_s: float = 1.0
    lookup_reload_s_min: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError("port must be within 0..65535")
        Placement.parse(self.placement)  # raises ValueError naming the problem
        positive = (
            "heartbeat_interval_s",
            "node_timeout_s",
            "health_interval_s",
            "lease_s",
            "node_request_timeout_s",
            "delete_retry_s_max",
            "node_requests_inflight_max",
            "request_body_bytes_max",
            "loop_batch_max",
            "repair_attempts_max",
            "volumes_per_node_max",
            "volumes_create_max",
            "repairs_listed_max",
            "plan_moves_max",
            "lookup_snapshot_s",
            "lookup_reload_s_min",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        non_negative = ("writable_volumes_min", "readonly_cooldown_s", "node_free_bytes_min")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.lease_s <= self.health_interval_s:
            raise ValueError(
                "lease_s must exceed health_interval_s (a holder renews between passes)"
            )
        if self.node_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("node_timeout_s must exceed heartbeat_interval_s")
        if self.lookup_reload_s_min > self.lookup_snapshot_s:
            raise ValueError("lookup_reload_s_min must not exceed lookup_snapshot_s")
        if self.database_url and "://" not in self.database_url:
            raise ValueError("database_url must be a URL (postgresql+asyncpg://...)")

    @property
    def database(self) -> str:
        """The URL or SQLite path the directory opens."""
        return self.database_url or str(self.data_dir / "directory.sqlite3")

    @property
    def replica_count(self) -> int:
        return Placement.parse(self.placement).replica_count


def directory_config(document: dict[str, Any], **overrides: Any) -> DirectoryConfig:
    """The [directory] table of a parsed pinhole.toml, with command-line overrides on top."""
    table = dict(document.get("directory", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(DirectoryConfig, table, where="directory.")
