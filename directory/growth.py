"""Creating logical volumes: placement, id allocation, and the physical volume on every
replica.

Two steps, so that no network call runs inside a write transaction:
1. one write transaction places the replicas, allocates ids (max(volume_id)+1: safe
   because write transactions serialize, see common/db.py) and records each new logical
   volume in state `creating` with its replicas;
2. every replica's store node creates the physical volume (a 409 volume_exists counts as
   created: creation is idempotent); when all did, the volume turns `active`.
A volume left `creating` (a node failed) is retried by the next growth pass; a replica of
it on a node that is down is first moved to another node (the volume holds nothing yet, so
moving it is only a change of rows), so that a dead node never blocks growth.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import sqlalchemy as sa

from directory import schema
from directory.errors import NoCapacity, VolumeCreateFailed
from directory.placement import Placement, Unsatisfiable, place
from directory.schema import LOCK, LogicalVolumeState, ReplicaState
from directory.state import ClusterState, VolumeInfo, load_state
from store.client import StoreClient, StoreClientError

if TYPE_CHECKING:
    from directory.service import Directory


async def allocate(directory: Directory, count: int, *, partial: bool) -> list[int]:
    """Step 1 for `count` volumes. Raises NoCapacity when none (or, unless `partial`, not
    all) can be placed."""
    policy = Placement.parse(directory.config.placement)
    lv, rp = schema.logical_volumes, schema.replicas
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        state = await load_state(conn, directory.config, now)
        candidates = {c.node_id: c for c in state.placement_candidates()}
        top = (await conn.execute(sa.select(sa.func.max(lv.c.volume_id)))).scalar()
        # Above every id a store node reported too: after a restore from an older backup
        # the nodes may hold volumes the directory no longer knows, and an id handed out
        # again would name two volumes.
        reported = max((vid for n in state.nodes.values() for vid in n.volumes), default=0)
        next_vid = max(int(top or 0), reported) + 1
        planned: list[tuple[int, tuple[str, ...]]] = []
        for _ in range(count):
            try:
                chosen = place(policy, list(candidates.values()))
            except Unsatisfiable as e:
                if planned and partial:
                    break
                raise NoCapacity(str(e)) from None
            planned.append((next_vid, chosen))
            next_vid += 1
            for nid in chosen:
                c = candidates[nid]
                candidates[nid] = type(c)(c.node_id, c.failure_domain, c.load + 1)
                if c.load + 1 >= directory.config.volumes_per_node_max:
                    del candidates[nid]
        for vid, chosen in planned:
            await conn.execute(
                lv.insert().values(
                    volume_id=vid,
                    state=LogicalVolumeState.CREATING,
                    writable=False,
                    readonly_reason=None,
                    readonly_until_unix_s=0.0,
                    operator_readonly=False,
                    created_unix_s=now,
                )
            )
            for nid in chosen:
                await conn.execute(
                    rp.insert().values(
                        volume_id=vid,
                        node_id=nid,
                        state=ReplicaState.READY,
                        replaces=None,
                        created_unix_s=now,
                    )
                )
    for vid, chosen in planned:
        directory.log.info("allocated volume %d on %s", vid, ", ".join(chosen))
    return [vid for vid, _ in planned]


async def create_physical(directory: Directory, state: ClusterState, lv: VolumeInfo) -> None:
    """Step 2 for one volume; raises VolumeCreateFailed naming the nodes that failed."""

    async def create_on(node_id: str) -> str | None:
        node = state.nodes.get(node_id)
        if node is None or not state.alive(node_id):
            return f"{node_id}: down"
        client = StoreClient(node.url, credentials=directory.credentials, session=directory.session)
        try:
            await client.create_volume(lv.volume_id)
        except StoreClientError as e:
            if e.status == 409 and e.code == "volume_exists":
                return None
            return f"{node_id}: {e}"
        return None

    errors = [e for e in await asyncio.gather(*(create_on(r.node_id) for r in lv.replicas)) if e]
    if errors:
        raise VolumeCreateFailed(f"volume {lv.volume_id} not created on " + "; ".join(errors))
    t, rp = schema.logical_volumes, schema.replicas
    async with directory.db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            t.update()
            .where(t.c.volume_id == lv.volume_id, t.c.state == LogicalVolumeState.CREATING)
            .values(state=LogicalVolumeState.ACTIVE)
        )
        if result.rowcount:
            # The writability rule's grace for heartbeats that predate the physical volume
            # counts from now, when every physical volume exists.
            await conn.execute(
                rp.update()
                .where(rp.c.volume_id == lv.volume_id)
                .values(created_unix_s=directory.clock.now())
            )


async def create_volumes(directory: Directory, count: int, *, partial: bool) -> list[int]:
    """Both steps; the ids of the volumes now active. Raises NoCapacity or
    VolumeCreateFailed (the ones not created stay `creating`)."""
    vids = await allocate(directory, count, partial=partial)
    state = await directory.state()
    results = await asyncio.gather(
        *(create_physical(directory, state, state.volumes[v]) for v in vids),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    for f in failures:
        if not isinstance(f, VolumeCreateFailed):
            raise f
    if failures:
        raise VolumeCreateFailed("; ".join(str(f) for f in failures))
    return vids


async def replace_down_replicas(directory: Directory, vid: int) -> bool:
    """Moves the replicas of a volume still `creating` off nodes that are down, keeping the
    placement policy. Returns whether anything moved."""
    policy = Placement.parse(directory.config.placement)
    rp = schema.replicas
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        state = await load_state(conn, directory.config, now)
        lv = state.volumes.get(vid)
        if lv is None or lv.state != LogicalVolumeState.CREATING:
            return False
        down = [r.node_id for r in lv.replicas if not state.alive(r.node_id)]
        if not down:
            return False
        keep = [state.candidate(r.node_id) for r in lv.replicas if state.alive(r.node_id)]
        try:
            chosen = place(policy, state.placement_candidates(), keep=keep)
        except Unsatisfiable as e:
            directory.log.warning("volume %d: cannot move off %s: %s", vid, down, e)
            return False
        await conn.execute(rp.delete().where(rp.c.volume_id == vid, rp.c.node_id.in_(down)))
        for nid in chosen[len(keep) :]:
            await conn.execute(
                rp.insert().values(
                    volume_id=vid,
                    node_id=nid,
                    state=ReplicaState.READY,
                    replaces=None,
                    created_unix_s=now,
                )
            )
    directory.log.info("volume %d (creating): moved off %s to %s", vid, down, chosen[len(keep) :])
    return True


async def growth_pass(directory: Directory) -> None:
    """Finishes volumes left `creating`, then creates volumes while fewer than
    writable_volumes_min are writable and placement still finds room."""
    config = directory.config
    state = await directory.state()
    for lv in list(state.volumes.values()):
        stuck = lv.state == LogicalVolumeState.CREATING and any(
            not state.alive(r.node_id) for r in lv.replicas
        )
        if stuck and await replace_down_replicas(directory, lv.volume_id):
            state = await directory.state()
    for lv in state.volumes.values():
        if lv.state == LogicalVolumeState.CREATING:
            try:
                await create_physical(directory, state, lv)
            except VolumeCreateFailed as e:
                directory.log.warning("%s", e)
    state = await directory.state()
    writable = sum(1 for lv in state.volumes.values() if state.writability(lv)[0])
    # A volume still `creating` counts as coming: a node failing creation must not make
    # every pass allocate more.
    creating = sum(1 for lv in state.volumes.values() if lv.state == LogicalVolumeState.CREATING)
    missing = min(config.writable_volumes_min - writable - creating, config.volumes_create_max)
    if missing <= 0:
        return
    try:
        vids = await create_volumes(directory, missing, partial=True)
    except NoCapacity as e:
        directory.note_alert("no_capacity", f"growth cannot place a volume: {e}")
        return
    except VolumeCreateFailed as e:
        directory.log.warning("growth: %s", e)
        return
    directory.clear_alert("no_capacity")
    directory.log.info("growth created volumes %s (%d were writable)", vids, writable)
