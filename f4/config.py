"""The f4 cell's configuration: the [f4] table of pinhole.toml, parsed once into a frozen,
validated F4Config. Sizes in bytes, durations in seconds.

Each node is a failure domain (a disk) and names the rack it sits in, so `pinhole f4 status`
can say how many node and rack losses every stripe survives. A node without a url is a
directory `<cell_root>/blocks/<node>` on this host; a node with one is served by the f4
storage node process at that base URL (f4/node_http.py), which may serve several nodes (one
process, several disks) from its own `<blocks>/<node>` directories. One cell per metadata
database: the f4 job queue has no cell column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from common.config import build
from common.ids import SHARD_MAX
from f4.erasure import DEFAULT_EC_TYPE, EC_TYPES, STRIPE_BLOCKS
from f4.layout import ALIGN_BYTES

NODES_MAX: Final = 1000  # the index stores node numbers as u16; far more than a cell needs
NODE_NAME_CHARS_MAX: Final = 64  # the index stores a name's length as u8
BLOCK_BYTES_MAX: Final = 16 << 30
READ_THREADS_MAX: Final = 256
NODE_URL_CHARS_MAX: Final = 2048


def node_url_problem(url: str) -> str | None:
    """Why `url` is not a storage node's base URL (http(s)://host[:port][/path], no query,
    fragment or credentials), or None when it is one."""
    if len(url) > NODE_URL_CHARS_MAX:
        return f"is longer than {NODE_URL_CHARS_MAX} characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        return f"does not parse: {e}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "must have no query, fragment or user"
    if port == 0 or any(ch.isspace() for ch in url):
        return "has a bad port or white space"
    return None


@dataclass(frozen=True, slots=True)
class F4Node:
    """A failure domain: a disk or host, in a rack; reached at `url` (an f4 storage node
    process) or, when url is "", as the directory <cell_root>/blocks/<name>."""

    name: str
    rack: str = ""
    url: str = ""

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > NODE_NAME_CHARS_MAX:
            raise ValueError(f"a node name has 1..{NODE_NAME_CHARS_MAX} characters")
        if not all(ch.isalnum() or ch in "-_." for ch in self.name) or self.name[0] == ".":
            raise ValueError(f"node name {self.name!r}: letters, digits, '-', '_', '.' only")
        if self.url:
            problem = node_url_problem(self.url)
            if problem is not None:
                raise ValueError(f"node {self.name}: url {problem}")


def _default_nodes() -> tuple[F4Node, ...]:
    return tuple(F4Node(f"n{i:02d}", f"r{i:02d}") for i in range(STRIPE_BLOCKS))


@dataclass(frozen=True, slots=True)
class F4Config:
    # Blocks live in <cell_root>/blocks/<node>; journals and verified marks in
    # <cell_root>/work; the cron lock is <cell_root>/f4.lock.
    cell_root: Path = Path(".pinhole/f4")
    # The sealed Haystack volumes to migrate: a store node's volume directory, or (when
    # haystack_url is set) that store node's HTTP API, for a migration that runs on
    # another host (f4/store_source.py; it reads with the operator's credentials).
    haystack_dir: Path = Path(".pinhole/store/volumes")
    haystack_url: str = ""
    nodes: tuple[F4Node, ...] = _default_nodes()
    block_bytes: int = 1 << 30
    code: str = DEFAULT_EC_TYPE
    # A sealed volume migrates once its newest needle (its data file's last write) is
    # at least this old.
    age_s_min: float = 90 * 86400.0
    # Rebuilds write at most this many MB (10^6 bytes) per second; 0: unthrottled.
    rebuild_mb_s: float = 50.0
    # Migrations read and write at most about this many MB (10^6 bytes) of plaintext per
    # second, paid per stripe written and per blob read back; 0: unthrottled.
    migrate_mb_s: float = 0.0
    # "" = <cell_root>/keys.sqlite3.
    key_store_path: str = ""
    # Migrate and rebuild jobs: attempts before dead-lettering, backoff between them, lease.
    attempts_max: int = 5
    backoff_s_base: float = 60.0
    backoff_s_max: float = 3600.0
    lease_s: float = 60.0
    id_shard: int = 900  # the shard of job ids; distinct from every API process's id_shard
    # The directory whose volumes migrate here: a migration is announced to it first and the
    # volume's reads are switched to the cell last ("" = no directory: blocks only).
    directory_url: str = ""
    # The name node (`pinhole f4 name serve`): serves the cell's blobs under the store's
    # read and delete protocol, decrypting them; heartbeats to the directory under this id.
    name_node_id: str = "f4-name-1"
    name_host: str = "127.0.0.1"
    name_port: int = 8760
    name_url: str = ""  # how others reach it ("" = http://name_host:name_port)
    heartbeat_s: float = 2.0
    # The cluster secret the f4 commands take their credentials from when they need them
    # (storage nodes with a url, a directory_url); unset: PINHOLE_CLUSTER_SECRET or
    # ./.pinhole/cluster.secret. Services take --credentials or --secret-file instead.
    cluster_secret_file: Path | None = None
    read_threads: int = 8  # reads and decryption run on this many threads
    # Healthy reads on read tickets (common/read_ticket.py): the name node answers a reader
    # that asks with a signed range of the storage node and the blob's key, and the reader
    # fetches and decrypts the blob itself. False: every read's bytes pass through the name
    # node (as when clocks disagree by more than READ_TICKET_TTL_S, where every ticket
    # would be refused and read again in full).
    read_tickets: bool = True
    # The watcher (`pinhole f4 watch`): every watch_interval_s it asks each storage node
    # whether it is up and which objects it holds (listings only, no block read) and queues
    # a rebuild for a volume as soon as one of its blocks is missing; a node that does not
    # answer counts as lost only after node_lost_after_s (a restart is not a loss). Every
    # scrub_interval_s (0: never) it reads every block against its sidecar at scrub_mb_s
    # (0: unpaced). Every rebalance_interval_s (0: never) it queues rebalance jobs.
    watch_interval_s: float = 10.0
    node_lost_after_s: float = 300.0
    scrub_interval_s: float = 7 * 86400.0
    scrub_mb_s: float = 20.0
    rebalance_interval_s: float = 0.0
    # A stale file (a block, sidecar or index copy no committed index generation places on
    # its node: a node back after its blocks were rebuilt elsewhere, f4/stale.py) is
    # deleted by the watcher once it has seen it stale for this long, and only when the
    # placed copy is healthy; `pinhole f4 reclaim` deletes them at once.
    stale_block_grace_s: float = 3600.0
    watch_host: str = "127.0.0.1"
    watch_port: int = 8761
    # Rebalancing (`pinhole f4 rebalance`): a cell is skewed when a node holds more than
    # rebalance_slack_blocks blocks more than another; one run moves at most
    # rebalance_moves_max blocks of a volume, each paced at rebuild_mb_s.
    rebalance_slack_blocks: int = 2
    rebalance_moves_max: int = 256

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("nodes must name at least one node")
        if len(self.nodes) > NODES_MAX:
            raise ValueError(f"at most {NODES_MAX} nodes")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be distinct")
        if not ALIGN_BYTES <= self.block_bytes <= BLOCK_BYTES_MAX or self.block_bytes % ALIGN_BYTES:
            raise ValueError(
                f"block_bytes must be a multiple of {ALIGN_BYTES} up to {BLOCK_BYTES_MAX}"
            )
        if self.code not in EC_TYPES:
            raise ValueError(f"code must be one of {', '.join(EC_TYPES)}")
        if self.age_s_min < 0 or self.rebuild_mb_s < 0 or self.migrate_mb_s < 0:
            raise ValueError("age_s_min, rebuild_mb_s and migrate_mb_s must not be negative")
        if self.attempts_max < 1:
            raise ValueError("attempts_max must be >= 1")
        if not 0 <= self.name_port <= 65535:
            raise ValueError("name_port must be within 0..65535")
        for url in (self.directory_url, self.name_url):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// base URL")
        if not 1 <= self.read_threads <= READ_THREADS_MAX:
            raise ValueError(f"read_threads must be within 1..{READ_THREADS_MAX}")
        for name in ("backoff_s_base", "backoff_s_max", "lease_s", "heartbeat_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.node_lost_after_s < 0 or self.scrub_interval_s < 0 or self.scrub_mb_s < 0:
            raise ValueError("node_lost_after_s, scrub_interval_s and scrub_mb_s must be >= 0")
        if self.rebalance_interval_s < 0 or not self.watch_interval_s > 0:
            raise ValueError("watch_interval_s must be > 0 and rebalance_interval_s >= 0")
        if self.stale_block_grace_s < 0:
            raise ValueError("stale_block_grace_s must be >= 0")
        if not 0 <= self.watch_port <= 65535:
            raise ValueError("watch_port must be within 0..65535")
        if self.rebalance_slack_blocks < 1 or self.rebalance_moves_max < 1:
            raise ValueError("rebalance_slack_blocks and rebalance_moves_max must be >= 1")
        if not 0 <= self.id_shard <= SHARD_MAX:
            raise ValueError(f"id_shard must be within 0..{SHARD_MAX}")

    @property
    def blocks_dir(self) -> Path:
        return self.cell_root / "blocks"

    @property
    def work_dir(self) -> Path:
        return self.cell_root / "work"

    @property
    def lock_path(self) -> Path:
        return self.cell_root / "f4.lock"

    @property
    def keys_path(self) -> Path:
        return Path(self.key_store_path) if self.key_store_path else self.cell_root / "keys.sqlite3"

    @property
    def name_node_url(self) -> str:
        return (self.name_url or f"http://{self.name_host}:{self.name_port}").rstrip("/")

    def rack_of(self, node: str) -> str:
        """The node's rack; a node without one is a rack of its own."""
        for n in self.nodes:
            if n.name == node:
                return n.rack or f"({n.name})"
        return f"({node})"


def f4_config(document: dict[str, Any], **overrides: Any) -> F4Config:
    """The [f4] table of a parsed pinhole.toml with command-line overrides (None ignored)
    on top. Raises common.config.ConfigError."""
    table = dict(document.get("f4", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(F4Config, table, where="f4.")
