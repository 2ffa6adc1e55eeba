"""The f4 tier: a sealed volume's reads switch from its Haystack replicas to an f4 name
node, and the Haystack replicas are released.

Three operator steps (admin routes, docs/api/directory.md "The f4 tier"), each
idempotent, around the migration the f4 commands run:

1. `begin`: the volume is active and takes no writes (sealed or read-only, else 409
   volume_writable) and no delete of it is still owed to a replica (else 409
   deletes_pending: the migration then reads a Haystack volume that has every earlier
   delete); a replica on the f4 node is recorded in state copying. From then on
   every delete of the volume is recorded for the f4 node too (target_role f4,
   deletes.py), and the volume stays unwritable while that replica exists (a write would
   miss the f4 copy: ClusterState.writability, reason `f4_copying`).
2. `switch`: in one write transaction, with the f4 node alive and no delete of the
   volume still owed to any replica (else 409 deletes_pending: the caller retries later,
   so the f4 copy has every delete the Haystack replicas had), the f4 replica turns
   ready, the Haystack replicas' rows go (with their pending deletes and repairs) and
   the volume turns `f4`: from the commit on, lookups list the f4 name node as the only
   replica and deletes go to it alone. lookup_snapshot_s after the commit (no network
   call inside a transaction; by then every directory's lookup snapshot shows the switch,
   so a router whose old replicas fail and that looks again finds the f4 node) every
   former Haystack replica is released: `DELETE /volumes/{vid}` on its store node. A
   router holding a lookup from before the switch (lookup_ttl_s) asks the released
   replicas, is told volume_not_found by each, looks the volume up again and reads f4.
3. `abort` (instead of 2, for a failed migration): the copying f4 replica is removed (with
   the deletes owed to it); refused once switched (409 volume_in_f4).

A release that failed (store down, timeout) is not lost: `release_pass` (the `releases`
loop) orders `DELETE /volumes/{vid}` on every alive store node whose last heartbeat still
reports a volume in state f4. The state `f4` is final: nothing turns a volume back into a
Haystack one, so a store node reporting such a volume only ever holds a released copy.
The same loop deletes the copies of active volumes that returning store nodes still hold
after `pinhole volume fix-replication` replaced them (`replaced_copies`): such a copy
missed every delete made while its node was away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from directory import schema
from directory.deletes import ERROR_CHARS_MAX, replica_deletes_pending
from directory.errors import (
    BadRequest,
    Conflict,
    DeletesPending,
    NodeNotFound,
    VolumeInF4,
    VolumeNotFound,
    VolumeWritable,
)
from directory.moves import remove_rows
from directory.placement import Placement
from directory.registry import NODE_ID_CHARS_MAX
from directory.schema import LOCK, LogicalVolumeState, NodeRole, ReplicaState
from directory.state import ClusterState, VolumeInfo, load_state
from store.client import StoreClient, StoreClientError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from directory.service import Directory

# The reason writability gives a volume in state f4 (ClusterState.writability).
F4_REASON: Final = LogicalVolumeState.F4.value


@dataclass(frozen=True, slots=True)
class Release:
    """A Haystack replica to release: its node, where it answers, and the volume's size
    there by the node's last heartbeat (0 when it reported none)."""

    volume_id: int
    node_id: str
    url: str
    size_bytes: int
    # "f4": a copy of a volume f4 serves; "replaced": a replica replaced while its node
    # was away (replaced_copies). Names the counters: <kind>_releases, <kind>_release_failures.
    kind: str = "f4"


def _node_id(body: dict[str, Any]) -> str:
    node_id = body.get("node_id")
    if not isinstance(node_id, str) or not 0 < len(node_id) <= NODE_ID_CHARS_MAX:
        raise BadRequest(f"node_id must be a non-empty string of at most {NODE_ID_CHARS_MAX}")
    return node_id


async def _locked_state(
    directory: Directory, conn: AsyncConnection, volume_id: int, node_id: str
) -> tuple[ClusterState, VolumeInfo]:
    """The state (inside the write transaction), the volume, and checks that `node_id` is
    a known f4 node: 404 volume_not_found / node_not_found, 400 for another role."""
    state = await load_state(conn, directory.config, directory.clock.now())
    lv = state.volumes.get(volume_id)
    if lv is None:
        raise VolumeNotFound(f"no logical volume {volume_id}")
    node = state.nodes.get(node_id)
    if node is None:
        raise NodeNotFound(f"no node {node_id}")
    if node.role != NodeRole.F4:
        raise BadRequest(f"node {node_id} is a {node.role} node, not an f4 node")
    return state, lv


async def begin(directory: Directory, volume_id: int, body: dict[str, Any]) -> None:
    """Records the copying f4 replica of `volume_id` on the f4 node `body["node_id"]`."""
    node_id = _node_id(body)
    async with directory.db.transaction(lock=LOCK) as conn:
        state, lv = await _locked_state(directory, conn, volume_id, node_id)
        f4 = state.f4_replica(lv)
        if f4 is not None:
            if f4.node_id == node_id:
                return  # idempotent: begun (or switched) already
            raise Conflict(f"volume {volume_id} is already on the f4 node {f4.node_id}")
        if lv.state != LogicalVolumeState.ACTIVE:
            raise Conflict(f"volume {volume_id} is {lv.state}, not active")
        writable, _ = state.writability(lv)
        if writable:
            raise VolumeWritable(
                f"volume {volume_id} is writable: seal it (or make it read-only) first"
            )
        pending = await replica_deletes_pending(conn, volume_id)
        if pending:
            raise DeletesPending(
                f"{pending} deletes of volume {volume_id} are still owed to its replicas: "
                "begin once they are delivered",
                count=pending,
            )
        await conn.execute(
            schema.replicas.insert().values(
                volume_id=volume_id,
                node_id=node_id,
                state=ReplicaState.COPYING,
                replaces=None,
                created_unix_s=directory.clock.now(),
            )
        )
    # Lookups show the copying replica at once (here; other directories sharing the
    # database within lookup_snapshot_s): deletes reach it from then on.
    directory.forget_lookup()
    directory.log.info("volume %d: f4 copy on %s begun", volume_id, node_id)


async def switch(directory: Directory, volume_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Switches the volume's reads to its f4 replica, then releases the Haystack replicas:
    {"released": [{node_id, size_bytes, ok, error}], "bytes_released"}. A repeat releases
    what store nodes still report of the volume (usually nothing)."""
    node_id = _node_id(body)
    async with directory.db.transaction(lock=LOCK) as conn:
        state, lv = await _locked_state(directory, conn, volume_id, node_id)
        f4 = state.f4_replica(lv)
        if f4 is None or f4.node_id != node_id:
            raise Conflict(
                f"no f4 copy of volume {volume_id} on {node_id} was begun "
                f"(POST /volumes/{volume_id}/f4/begin)"
            )
        repeat = lv.state == LogicalVolumeState.F4
        if repeat:
            releases = leftovers(state, volume_id)
        else:
            if lv.state != LogicalVolumeState.ACTIVE:
                raise Conflict(f"volume {volume_id} is {lv.state}, not active")
            if not state.alive(node_id):
                # Its reads would go nowhere; the Haystack replicas still serve them.
                raise Conflict(f"the f4 node {node_id} is down: switch once it is back")
            pending = await replica_deletes_pending(conn, volume_id)
            if pending:
                raise DeletesPending(
                    f"{pending} deletes of volume {volume_id} are still owed to its "
                    "replicas: retry the switch once they are delivered",
                    count=pending,
                )
            releases = [_release(state, volume_id, r.node_id) for r in state.store_replicas(lv)]
            rp, lvt = schema.replicas, schema.logical_volumes
            now = directory.clock.now()
            await conn.execute(
                rp.update()
                .where(rp.c.volume_id == volume_id, rp.c.node_id == node_id)
                .values(state=ReplicaState.READY, replaces=None, created_unix_s=now)
            )
            for r in releases:
                await remove_rows(conn, volume_id, r.node_id)
            await conn.execute(
                lvt.update()
                .where(lvt.c.volume_id == volume_id)
                .values(state=LogicalVolumeState.F4, writable=False)
            )
            directory.log.info(
                "volume %d: reads switched to f4 node %s; releasing %s",
                volume_id,
                node_id,
                ", ".join(r.node_id for r in releases) or "nothing",
            )
    if releases and not repeat:
        # Lookups are answered from snapshots up to lookup_snapshot_s old (in every
        # directory sharing the database): release only once each has reloaded, so a
        # router whose Haystack replicas fail and that looks the volume up again is told
        # the f4 node, never the replicas being released.
        directory.forget_lookup()
        await asyncio.sleep(directory.config.lookup_snapshot_s)
    outcomes = await release(directory, releases, absent_listed=not repeat)
    return {
        "released": outcomes,
        "bytes_released": sum(o["size_bytes"] for o in outcomes if o["ok"]),
    }


async def abort(directory: Directory, volume_id: int, body: dict[str, Any]) -> None:
    """Removes the copying f4 replica (and the deletes owed to it); nothing to do when
    there is none; 409 volume_in_f4 once switched."""
    node_id = _node_id(body)
    async with directory.db.transaction(lock=LOCK) as conn:
        state, lv = await _locked_state(directory, conn, volume_id, node_id)
        if lv.state == LogicalVolumeState.F4:
            raise VolumeInF4(f"volume {volume_id} was switched to f4: it cannot be aborted")
        f4 = state.f4_replica(lv)
        if f4 is None or f4.node_id != node_id:
            return  # idempotent: nothing begun on this node
        await remove_rows(conn, volume_id, node_id)
    directory.log.info("volume %d: f4 copy on %s aborted", volume_id, node_id)


def _release(state: ClusterState, volume_id: int, node_id: str, kind: str = "f4") -> Release:
    node = state.nodes.get(node_id)
    reported = node.volumes.get(volume_id, {}) if node is not None else {}
    size = reported.get("size_bytes", 0)
    return Release(
        volume_id=volume_id,
        node_id=node_id,
        url=node.url if node is not None else "",
        size_bytes=size if isinstance(size, int) and size >= 0 else 0,
        kind=kind,
    )


def replaced_copies(state: ClusterState) -> list[Release]:
    """Copies that alive store nodes still report of replicas a move replaced
    (`state.replaced`: fix-replication replaced them while their node was away, removing
    the deletes owed to them, so the copy missed every delete since; or balance's own
    cleanup failed), of active volumes the directory places no replica of on that node,
    while the placement's replica count of ready replicas on alive nodes holds the volume
    elsewhere. A copy the directory did not itself replace is never released, even if it
    knows no replica there (after a restore from an older backup a node may hold a newer
    volume under an id the directory reuses). moves.add_replica refuses a node while it
    reports such a copy, so no replica row can appear for it between this snapshot and the
    release."""
    need = Placement.parse(state.config.placement).replica_count
    out = []
    for node in state.stores(alive_only=True):
        for vid in sorted(node.volumes):
            if (vid, node.node_id) not in state.replaced:
                continue
            lv = state.volumes.get(vid)
            if lv is None or lv.state != LogicalVolumeState.ACTIVE:
                continue
            if any(r.node_id == node.node_id for r in lv.replicas):
                continue
            held = [r for r in state.ready_alive(lv) if not state.on_f4(r.node_id)]
            if len(held) < need:
                continue
            out.append(_release(state, vid, node.node_id, "replaced"))
    return out


def leftovers(state: ClusterState, volume_id: int | None = None) -> list[Release]:
    """Copies of volumes in state f4 that alive store nodes still report (of `volume_id`
    only, when given): released copies whose release failed or has not been seen yet."""
    out = []
    for node in state.stores(alive_only=True):
        for vid in sorted(node.volumes):
            lv = state.volumes.get(vid)
            if lv is None or lv.state != LogicalVolumeState.F4:
                continue
            if volume_id is not None and vid != volume_id:
                continue
            if any(r.node_id == node.node_id for r in lv.replicas):
                continue  # never so (an f4 volume's one replica is on an f4 node); kept safe
            out.append(_release(state, vid, node.node_id))
    return out


# What a release order found: the volume deleted, or already absent from the node.
_DELETED: Final = "deleted"
_ABSENT: Final = "absent"


async def release(
    directory: Directory, releases: list[Release], *, absent_listed: bool = True
) -> list[dict[str, Any]]:
    """Orders `DELETE /volumes/{vid}` on each node (node_requests_inflight_max at once):
    one {"volume_id", "node_id", "size_bytes", "ok", "error"} each. A node that no longer
    has the volume (404 volume_not_found) counts as released; unless `absent_listed`, such
    a node is left out of the answer (a heartbeat older than the release listed it: nothing
    was released now)."""
    limit = asyncio.Semaphore(directory.config.node_requests_inflight_max)

    async def one(r: Release) -> str:
        if not r.url:
            return f"node {r.node_id} is unknown"
        client = StoreClient(r.url, credentials=directory.credentials, session=directory.session)
        async with limit:
            try:
                await client.delete_volume(r.volume_id)
            except StoreClientError as e:
                if e.status == 404 and e.code == "volume_not_found":
                    return _ABSENT
                return str(e)[:ERROR_CHARS_MAX]
        return _DELETED

    found = await asyncio.gather(*(one(r) for r in releases))
    out = []
    for r, what in zip(releases, found, strict=True):
        ok = what in (_DELETED, _ABSENT)
        if what == _DELETED:
            directory.counters[f"{r.kind}_releases"] += 1
            directory.log.info(
                "volume %d released on %s (%s copy, %d bytes)",
                r.volume_id,
                r.node_id,
                r.kind,
                r.size_bytes,
            )
        elif not ok:
            directory.counters[f"{r.kind}_release_failures"] += 1
            directory.log.warning(
                "volume %d: release of the %s copy on %s failed (the releases loop retries): %s",
                r.volume_id,
                r.kind,
                r.node_id,
                what,
            )
        if what == _ABSENT and not absent_listed:
            continue
        out.append(
            {
                "volume_id": r.volume_id,
                "node_id": r.node_id,
                "size_bytes": r.size_bytes,
                "ok": ok,
                "error": None if ok else what,
            }
        )
    return out


async def release_pass(directory: Directory) -> None:
    """The `releases` loop: releases what alive store nodes still report of f4 volumes,
    and the replicas replaced while their node was away (at most loop_batch_max per
    pass)."""
    state = await directory.state()
    pending = [*leftovers(state), *replaced_copies(state)][: directory.config.loop_batch_max]
    done: list[tuple[int, str]] = []
    if pending:
        outcomes = await release(directory, pending, absent_listed=True)
        done = [
            (o["volume_id"], o["node_id"])
            for r, o in zip(pending, outcomes, strict=True)
            if o["ok"] and r.kind == "replaced"
        ]
    # Replaced replicas whose alive node no longer holds the copy have nothing left to
    # release (those of nodes still away wait for them).
    done += [
        (vid, node_id)
        for vid, node_id in state.replaced
        if state.alive(node_id) and vid not in state.nodes[node_id].volumes
    ]
    if done:
        await forget_replaced(directory, done)


async def forget_replaced(directory: Directory, pairs: list[tuple[int, str]]) -> None:
    rr = schema.replaced_replicas
    async with directory.db.transaction(lock=LOCK) as conn:
        for vid, node_id in pairs:
            await conn.execute(rr.delete().where(rr.c.volume_id == vid, rr.c.node_id == node_id))
