"""The directory's read model: one consistent snapshot of nodes, logical volumes and
replicas, and the pure rules computed from it (liveness, writability, the JSON views).

Writability is computed from the snapshot every time it is asked for, so two directory
processes over one database always agree; the health loop stores the result only for
operators and to log transitions.

Replicas on f4 nodes (role f4: a volume being migrated, or migrated) are not Haystack
replicas: they never count for placement, loads or the replica count, and a volume with
one is never writable (a write would miss the f4 copy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from directory import schema
from directory.config import DirectoryConfig
from directory.placement import Candidate
from directory.schema import LogicalVolumeState, NodeRole, ReplicaState
from store.volume_state import Mode


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    role: NodeRole
    url: str
    failure_domain: str
    free_bytes: int
    first_heartbeat_unix_s: float
    last_heartbeat_unix_s: float
    # volume id -> {"mode", "reason", "size_bytes", "size_bytes_max"} of the last heartbeat
    volumes: dict[int, dict[str, Any]]

    def alive(self, now: float, node_timeout_s: float) -> bool:
        return now - self.last_heartbeat_unix_s < node_timeout_s


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    volume_id: int
    node_id: str
    state: ReplicaState
    replaces: str | None
    created_unix_s: float


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    volume_id: int
    state: LogicalVolumeState
    writable: bool
    readonly_reason: str | None
    readonly_until_unix_s: float
    operator_readonly: bool
    created_unix_s: float
    replicas: tuple[ReplicaInfo, ...]


@dataclass(slots=True)
class ClusterState:
    now: float
    config: DirectoryConfig
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    volumes: dict[int, VolumeInfo] = field(default_factory=dict)
    # (volume id, node id) of the replicas moves replaced (schema.replaced_replicas).
    replaced: set[tuple[int, str]] = field(default_factory=set)

    @property
    def volume_id_max(self) -> int:
        """The highest logical volume id (0 when there is none): ids are handed out in
        increasing order, so a larger one did not exist when this state was read."""
        return max(self.volumes, default=0)

    def alive(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.alive(self.now, self.config.node_timeout_s)

    def stores(self, *, alive_only: bool) -> list[NodeInfo]:
        return [
            n
            for n in sorted(self.nodes.values(), key=lambda n: n.node_id)
            if n.role == NodeRole.STORE and (not alive_only or self.alive(n.node_id))
        ]

    def on_f4(self, node_id: str) -> bool:
        """Whether `node_id` is an f4 name node."""
        node = self.nodes.get(node_id)
        return node is not None and node.role == NodeRole.F4

    def store_replicas(self, lv: VolumeInfo) -> list[ReplicaInfo]:
        """The volume's Haystack replicas (those not on an f4 node)."""
        return [r for r in lv.replicas if not self.on_f4(r.node_id)]

    def f4_replica(self, lv: VolumeInfo) -> ReplicaInfo | None:
        """The volume's replica on an f4 node (at most one: tiering.py), if any."""
        return next((r for r in lv.replicas if self.on_f4(r.node_id)), None)

    def replica_counts(self) -> dict[str, int]:
        """Haystack replicas per store node (f4 replicas are no load of a store)."""
        counts = {n.node_id: 0 for n in self.nodes.values() if n.role == NodeRole.STORE}
        for lv in self.volumes.values():
            for r in self.store_replicas(lv):
                counts[r.node_id] = counts.get(r.node_id, 0) + 1
        return counts

    def placement_candidates(self) -> list[Candidate]:
        """Alive store nodes that may take one more replica, with their loads."""
        counts = self.replica_counts()
        c = self.config
        return [
            Candidate(n.node_id, n.failure_domain, counts.get(n.node_id, 0))
            for n in self.stores(alive_only=True)
            if n.free_bytes >= c.node_free_bytes_min
            and counts.get(n.node_id, 0) < c.volumes_per_node_max
        ]

    def candidate(self, node_id: str) -> Candidate:
        node = self.nodes[node_id]
        return Candidate(node_id, node.failure_domain, self.replica_counts().get(node_id, 0))

    def writability(self, lv: VolumeInfo) -> tuple[bool, str | None]:
        """(writable, reason when not) by the rule of docs/api/directory.md."""
        if lv.state != LogicalVolumeState.ACTIVE:
            return False, lv.state.value
        if self.f4_replica(lv) is not None:
            return False, "f4_copying"
        if lv.operator_readonly:
            return False, lv.readonly_reason or "operator"
        if lv.readonly_until_unix_s > self.now:
            return False, lv.readonly_reason or "write_failure"
        if len(lv.replicas) < self.config.replica_count:
            return False, "under_replicated"
        for r in lv.replicas:
            if r.state != ReplicaState.READY:
                return False, "replica_copying"
            node = self.nodes.get(r.node_id)
            if node is None or not self.alive(r.node_id):
                return False, "node_down"
            reported = node.volumes.get(lv.volume_id)
            if reported is None:
                # A heartbeat is a snapshot taken before it arrives (and it may wait for
                # the database): one received within node_timeout_s of the replica's
                # creation may predate it. Later ones must list it. A replica really
                # missing in that window fails its first write, which the writer reports.
                grace_s = self.config.node_timeout_s
                if node.last_heartbeat_unix_s >= r.created_unix_s + grace_s:
                    return False, "replica_missing"
            elif reported.get("mode") != Mode.WRITABLE:
                return False, f"replica_{reported.get('reason') or reported.get('mode')}"
        return True, None

    def ready_alive(self, lv: VolumeInfo) -> list[ReplicaInfo]:
        return [r for r in lv.replicas if r.state == ReplicaState.READY and self.alive(r.node_id)]

    def volume_json(self, lv: VolumeInfo) -> dict[str, Any]:
        writable, reason = self.writability(lv)

        def order(r: ReplicaInfo) -> tuple[int, str]:
            return (0 if r.state == ReplicaState.READY and self.alive(r.node_id) else 1, r.node_id)

        replicas = []
        for r in sorted(lv.replicas, key=order):
            node = self.nodes.get(r.node_id)
            replicas.append(
                {
                    "node_id": r.node_id,
                    "url": node.url if node else "",
                    "state": r.state,
                    "replaces": r.replaces,
                    "alive": self.alive(r.node_id),
                    "failure_domain": node.failure_domain if node else "",
                }
            )
        return {
            "volume_id": lv.volume_id,
            "state": lv.state,
            "writable": writable,
            "reason": reason,
            "operator_readonly": lv.operator_readonly,
            "replicas": replicas,
        }

    def node_json(self, n: NodeInfo) -> dict[str, Any]:
        return {
            "node_id": n.node_id,
            "role": n.role,
            "url": n.url,
            "failure_domain": n.failure_domain,
            "alive": self.alive(n.node_id),
            "free_bytes": n.free_bytes,
            "last_heartbeat_unix_s": n.last_heartbeat_unix_s,
            "volumes": sorted(n.volumes),
        }


async def volume_id_max(conn: AsyncConnection) -> int:
    """The highest logical volume id in the database (0 when none): one indexed read."""
    top = await conn.scalar(sa.select(sa.func.max(schema.logical_volumes.c.volume_id)))
    return int(top or 0)


async def load_state(conn: AsyncConnection, config: DirectoryConfig, now: float) -> ClusterState:
    state = ClusterState(now=now, config=config)
    for row in await conn.execute(sa.select(schema.nodes)):
        m = row._mapping
        volumes = {int(v["volume_id"]): v for v in json.loads(m["volumes_json"])}
        state.nodes[m["node_id"]] = NodeInfo(
            node_id=m["node_id"],
            role=NodeRole(m["role"]),
            url=m["url"],
            failure_domain=m["failure_domain"],
            free_bytes=int(m["free_bytes"]),
            first_heartbeat_unix_s=float(m["first_heartbeat_unix_s"]),
            last_heartbeat_unix_s=float(m["last_heartbeat_unix_s"]),
            volumes=volumes,
        )
    by_volume: dict[int, list[ReplicaInfo]] = {}
    for row in await conn.execute(sa.select(schema.replicas)):
        m = row._mapping
        r = ReplicaInfo(
            volume_id=int(m["volume_id"]),
            node_id=m["node_id"],
            state=ReplicaState(m["state"]),
            replaces=m["replaces"],
            created_unix_s=float(m["created_unix_s"]),
        )
        by_volume.setdefault(r.volume_id, []).append(r)
    rr = schema.replaced_replicas.c
    for row in await conn.execute(sa.select(rr.volume_id, rr.node_id)):
        state.replaced.add((int(row.volume_id), row.node_id))
    lvs = await conn.execute(sa.select(schema.logical_volumes).order_by("volume_id"))
    for row in lvs:
        m = row._mapping
        vid = int(m["volume_id"])
        state.volumes[vid] = VolumeInfo(
            volume_id=vid,
            state=LogicalVolumeState(m["state"]),
            writable=bool(m["writable"]),
            readonly_reason=m["readonly_reason"],
            readonly_until_unix_s=float(m["readonly_until_unix_s"]),
            operator_readonly=bool(m["operator_readonly"]),
            created_unix_s=float(m["created_unix_s"]),
            replicas=tuple(sorted(by_volume.get(vid, []), key=lambda r: r.node_id)),
        )
    return state
