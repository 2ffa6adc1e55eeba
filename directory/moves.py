"""Replica moves: the plans (`GET /plan/replication`, `GET /plan/balance`) and the replica
changes an operator command makes while it executes them (add in state copying, mark
ready, remove).

The directory only plans and records; the data is copied by the target store node's pull
(docs/api/store.md), driven by `pinhole volume fix-replication` / `balance` in ops/.
A plan is computed from one snapshot and is advisory: executing it step by step through
the replica endpoints is what changes state, and each step is idempotent.

Plans see Haystack replicas only: a replica on an f4 node (tiering.py) is never a source,
a target, a copy to resume nor a dead replica to replace, and volumes in state f4 are
neither re-replicated nor balanced. The replica endpoints refuse f4 nodes and f4 volumes
(the f4 routes own them).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from directory import schema
from directory.errors import (
    BadRequest,
    Conflict,
    DirectoryNotFound,
    NodeNotFound,
    StaleCopyHeld,
    VolumeInF4,
    VolumeNotFound,
)
from directory.placement import Placement, Unsatisfiable, loose_targets, place, plan_balance
from directory.schema import LOCK, LogicalVolumeState, NodeRole, RepairState, ReplicaState
from directory.state import ClusterState

if TYPE_CHECKING:
    from directory.service import Directory


def reported_volume_ids(volumes_json: str) -> set[int]:
    """The volume ids in a node's last heartbeat (`nodes.volumes_json`)."""
    try:
        reported = json.loads(volumes_json)
    except ValueError:
        return set()
    return {
        v["volume_id"]
        for v in reported
        if isinstance(v, dict) and isinstance(v.get("volume_id"), int)
    }


def _endpoint(state: ClusterState, node_id: str) -> dict[str, str]:
    node = state.nodes.get(node_id)
    return {"node_id": node_id, "url": node.url if node else ""}


def replication_plan(state: ClusterState) -> list[dict[str, Any]]:
    """Moves that bring every active volume back to the placement's replica count."""
    policy = Placement.parse(state.config.placement)
    candidates = state.placement_candidates()
    moves: list[dict[str, Any]] = []
    for lv in state.volumes.values():
        if lv.state != LogicalVolumeState.ACTIVE or len(moves) >= state.config.plan_moves_max:
            continue
        haystack = state.store_replicas(lv)
        ready = [r for r in state.ready_alive(lv) if not state.on_f4(r.node_id)]
        if len(ready) >= policy.replica_count or not ready:
            continue  # healthy, or nothing left to copy from (an alert, not a move)
        source = ready[0].node_id
        copying = [
            r for r in haystack if r.state == ReplicaState.COPYING and state.alive(r.node_id)
        ]
        for r in copying:  # resume what was started
            moves.append(
                {
                    "volume_id": lv.volume_id,
                    "source": _endpoint(state, source),
                    "target": _endpoint(state, r.node_id),
                    "replaces": r.replaces,
                }
            )
        needed = policy.replica_count - len(ready) - len(copying)
        if needed <= 0:
            continue
        keep = [state.candidate(r.node_id) for r in (*ready, *copying)]
        # Not onto a node still holding an old copy (add_replica refuses it until the
        # releases loop has deleted the copy).
        placed = {r.node_id for r in lv.replicas}
        usable = [
            c
            for c in candidates
            if c.node_id in placed or lv.volume_id not in state.nodes[c.node_id].volumes
        ]
        try:
            targets = place(policy, usable, keep=keep)[len(keep) :]
        except Unsatisfiable:
            targets = loose_targets(needed, usable, keep=keep)
        dead = [
            r.node_id
            for r in haystack
            if not state.alive(r.node_id) and not any(c.replaces == r.node_id for c in copying)
        ]
        for i, target in enumerate(targets[:needed]):
            moves.append(
                {
                    "volume_id": lv.volume_id,
                    "source": _endpoint(state, source),
                    "target": _endpoint(state, target),
                    "replaces": dead[i] if i < len(dead) else None,
                }
            )
    return moves[: state.config.plan_moves_max]


def balance_plan(state: ClusterState) -> list[dict[str, Any]]:
    policy = Placement.parse(state.config.placement)
    nodes = [state.candidate(n.node_id) for n in state.stores(alive_only=True)]
    volumes = {
        vid: [r.node_id for r in lv.replicas]
        for vid, lv in state.volumes.items()
        if lv.state == LogicalVolumeState.ACTIVE
        and state.f4_replica(lv) is None  # being migrated: its replicas stay where they are
        and all(r.state == ReplicaState.READY for r in lv.replicas)
    }
    allowed = {c.node_id for c in state.placement_candidates()}
    moves = plan_balance(
        policy, nodes, volumes, targets_allowed=allowed, moves_max=state.config.plan_moves_max
    )
    return [
        {
            "volume_id": m.volume_id,
            "source": _endpoint(state, m.source),
            "target": _endpoint(state, m.target),
            "replaces": m.source,
        }
        for m in moves
    ]


async def add_replica(directory: Directory, volume_id: int, body: dict[str, Any]) -> None:
    node_id = body.get("node_id")
    replaces = body.get("replaces")
    if not isinstance(node_id, str) or not node_id:
        raise BadRequest("node_id must be a non-empty string")
    if replaces is not None and not isinstance(replaces, str):
        raise BadRequest("replaces must be a node id or null")
    lv, rp, n = schema.logical_volumes, schema.replicas, schema.nodes
    async with directory.db.transaction(lock=LOCK) as conn:
        volume = (
            await conn.execute(sa.select(lv.c.state).where(lv.c.volume_id == volume_id))
        ).first()
        if volume is None:
            raise VolumeNotFound(f"no logical volume {volume_id}")
        if volume.state == LogicalVolumeState.F4:
            raise VolumeInF4(f"volume {volume_id} is served by f4: it takes no Haystack replica")
        node = (
            await conn.execute(sa.select(n.c.role, n.c.volumes_json).where(n.c.node_id == node_id))
        ).first()
        if node is None or node.role != NodeRole.STORE:
            raise NodeNotFound(f"no store node {node_id}")
        existing = (
            await conn.execute(
                sa.select(rp.c.state).where(rp.c.volume_id == volume_id, rp.c.node_id == node_id)
            )
        ).first()
        if existing is not None:
            return  # idempotent: a resumed move adds the same replica again
        if volume_id in reported_volume_ids(node.volumes_json):
            # A copy the directory did not place there: one a move replaced while the node
            # was away (it missed every delete since; the releases loop deletes it,
            # tiering.replaced_copies), or one the directory never knew (a restore from
            # an older backup). Either way it must never turn ready.
            raise StaleCopyHeld(
                f"{node_id} holds a copy of volume {volume_id} that the directory did not "
                "place there: a replaced replica is deleted by the releases loop (retry "
                "after the node's next heartbeat); any other needs an operator "
                "(docs/operations/backup.md)"
            )
        # A replaced copy the node no longer holds: nothing left to release.
        rr = schema.replaced_replicas
        await conn.execute(rr.delete().where(rr.c.volume_id == volume_id, rr.c.node_id == node_id))
        await conn.execute(
            rp.insert().values(
                volume_id=volume_id,
                node_id=node_id,
                state=ReplicaState.COPYING,
                replaces=replaces,
                created_unix_s=directory.clock.now(),
            )
        )
    directory.log.info(
        "volume %d: replica on %s copying (replaces %s)", volume_id, node_id, replaces
    )


async def replica_ready(directory: Directory, volume_id: int, node_id: str) -> None:
    rp, n = schema.replicas, schema.nodes
    async with directory.db.transaction(lock=LOCK) as conn:
        role = await conn.scalar(sa.select(n.c.role).where(n.c.node_id == node_id))
        if role == NodeRole.F4:
            raise Conflict(f"{node_id} is an f4 node: POST /volumes/{volume_id}/f4/switch")
        row = (
            await conn.execute(
                sa.select(rp).where(rp.c.volume_id == volume_id, rp.c.node_id == node_id)
            )
        ).first()
        if row is None:
            raise DirectoryNotFound(f"node {node_id} holds no replica of volume {volume_id}")
        await conn.execute(
            rp.update()
            .where(rp.c.volume_id == volume_id, rp.c.node_id == node_id)
            .values(state=ReplicaState.READY, replaces=None, created_unix_s=directory.clock.now())
        )
        if row.replaces and row.replaces != node_id:
            await remove_rows(conn, volume_id, row.replaces)
            # Its node may come back with the old copy: the releases loop deletes it.
            rr = schema.replaced_replicas
            await conn.execute(
                rr.delete().where(rr.c.volume_id == volume_id, rr.c.node_id == row.replaces)
            )
            await conn.execute(
                rr.insert().values(
                    volume_id=volume_id,
                    node_id=row.replaces,
                    replaced_unix_s=directory.clock.now(),
                )
            )
    directory.log.info("volume %d: replica on %s ready", volume_id, node_id)


async def remove_replica(directory: Directory, volume_id: int, node_id: str) -> None:
    rp = schema.replicas
    async with directory.db.transaction(lock=LOCK) as conn:
        rows = list(await conn.execute(sa.select(rp).where(rp.c.volume_id == volume_id)))
        if not any(r.node_id == node_id for r in rows):
            raise DirectoryNotFound(f"node {node_id} holds no replica of volume {volume_id}")
        others_ready = [r for r in rows if r.node_id != node_id and r.state == ReplicaState.READY]
        if not others_ready:
            raise Conflict(f"{node_id} holds the last ready replica of volume {volume_id}")
        await remove_rows(conn, volume_id, node_id)
    directory.log.info("volume %d: replica on %s removed", volume_id, node_id)


async def remove_rows(conn: Any, volume_id: int, node_id: str) -> None:
    """Removes the replica of `volume_id` on `node_id` with what is owed to it: its pending
    deletes (store or f4; a cache's invalidations stay) and its pending repairs."""
    rp, pd, rep = schema.replicas, schema.pending_deletes, schema.repairs
    await conn.execute(rp.delete().where(rp.c.volume_id == volume_id, rp.c.node_id == node_id))
    # Deletes owed to a replica that no longer exists are owed to nobody.
    await conn.execute(
        pd.delete().where(
            pd.c.volume_id == volume_id,
            pd.c.node_id == node_id,
            pd.c.target_role.in_([NodeRole.STORE, NodeRole.F4]),
        )
    )
    await conn.execute(
        rep.delete().where(
            rep.c.volume_id == volume_id,
            rep.c.node_id == node_id,
            rep.c.state == RepairState.PENDING,
        )
    )
