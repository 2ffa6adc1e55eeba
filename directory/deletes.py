"""Deletes: recorded durably per target, delivered at least once.

POST /deletes records one pending delete per replica of the logical volume (any state: a
replica being copied gets it once its volume exists) and one cache invalidation per alive
cache node, in one write transaction; then tries at once those on nodes it sees alive. A
replica on a node it sees down is only recorded (the loop delivers it when the node is
back): trying it would hold the caller's answer for node_request_timeout_s when the host
is unreachable rather than refusing connections (a cut link, tests/ops/test_netns.py).
What failed stays
pending and the delete loop retries it with exponential backoff (capped at
delete_retry_s_max), skipping nodes that are down; a node's heartbeat after downtime makes
its rows due at once. Before trying a row, its next try is pushed past the attempt's
timeout (a claim), so a second directory process never sends the same row concurrently.
Delivery is idempotent: a store answering 404 not_found (nothing live) counts as done.

A replica on an f4 node (a volume being migrated, or migrated: tiering.py) is a target
like any other, recorded with target_role `f4` and delivered with the store's protocol
(`DELETE {url}/n/{vid}/{key}[/{alt}]`, the same answers): the f4 name node speaks it for
the volumes it serves. The role tells the f4 switch which rows it waits for and lets
status tell the tiers apart; until the name node serves the volume it answers 404
volume_not_found and the row stays pending, as for a store replica still being copied.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import sqlalchemy as sa

from common.credentials import Purpose
from directory import schema
from directory.errors import VolumeNotFound
from directory.schema import LOCK, NodeRole
from store.client import StoreClient, StoreClientError

if TYPE_CHECKING:
    from directory.service import Directory

BACKOFF_FIRST_S = 0.2
# The delete targets that hold the volume's data (the store's delete protocol); the rest
# (caches) get an invalidation.
REPLICA_ROLES: Final = frozenset((NodeRole.STORE, NodeRole.F4))
ERROR_CHARS_MAX = 500


@dataclass(frozen=True, slots=True)
class PendingDelete:
    id: int
    volume_id: int
    key: int
    alt_key: int | None
    node_id: str
    target_role: str
    url: str
    attempts: int


def backoff_s(attempts: int, cap_s: float) -> float:
    return float(min(cap_s, BACKOFF_FIRST_S * 2 ** min(attempts, 30)))


async def record(
    directory: Directory, volume_id: int, key: int, alt_key: int | None
) -> dict[str, int]:
    """Records and tries the delete; {"replicas_done", "replicas_pending"} (store and f4
    replicas; cache invalidations are delivered the same way but not counted)."""
    config = directory.config
    pd = schema.pending_deletes
    claim_s = config.node_request_timeout_s + 1.0
    rows: list[PendingDelete] = []
    tried: list[PendingDelete] = []  # the rows of alive nodes, sent below
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        lv = schema.logical_volumes
        exists = (
            await conn.execute(sa.select(lv.c.volume_id).where(lv.c.volume_id == volume_id))
        ).first()
        if exists is None:
            raise VolumeNotFound(f"no logical volume {volume_id}")
        n, rp = schema.nodes, schema.replicas
        alive_after = now - config.node_timeout_s
        targets = [
            (
                r.node_id,
                NodeRole.F4 if r.role == NodeRole.F4 else NodeRole.STORE,
                r.url,
                r.last_heartbeat_unix_s > alive_after,
            )
            for r in await conn.execute(
                sa.select(rp.c.node_id, n.c.url, n.c.role, n.c.last_heartbeat_unix_s)
                .join(n, n.c.node_id == rp.c.node_id)
                .where(rp.c.volume_id == volume_id)
            )
        ]
        caches = await conn.execute(
            sa.select(n.c.node_id, n.c.url).where(
                n.c.role == NodeRole.CACHE, n.c.last_heartbeat_unix_s > alive_after
            )
        )
        targets += [(c.node_id, NodeRole.CACHE, c.url, True) for c in caches]
        for node_id, role, url, alive in targets:
            result = await conn.execute(
                pd.insert().values(
                    volume_id=volume_id,
                    key=str(key),
                    alt_key=alt_key,
                    node_id=node_id,
                    target_role=role,
                    attempts=0,
                    # Claimed for the attempt below; a down node's row is due at once (the
                    # loop skips it while the node is down).
                    next_try_unix_s=now + claim_s if alive else now,
                    created_unix_s=now,
                    last_error=None,
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
            row = PendingDelete(int(pk[0]), volume_id, key, alt_key, node_id, role, url, 0)
            rows.append(row)
            if alive:
                tried.append(row)
    done = await deliver(directory, tried)
    stores = [r for r in rows if r.target_role in REPLICA_ROLES]
    replicas_done = sum(1 for r in stores if r.id in done)
    return {"replicas_done": replicas_done, "replicas_pending": len(stores) - replicas_done}


async def _send(directory: Directory, row: PendingDelete) -> str | None:
    """None when the target has the delete, else the error."""
    if row.target_role in REPLICA_ROLES:
        client = StoreClient(row.url, credentials=directory.credentials, session=directory.session)
        try:
            await client.delete(row.volume_id, row.key, row.alt_key)
        except StoreClientError as e:
            if e.status == 404 and e.code == "not_found":
                return None
            return str(e)
        return None
    headers = {"Authorization": directory.credentials.header(Purpose.WRITE)}
    try:
        async with directory.session.delete(
            f"{row.url}/c/{row.volume_id}/{row.key}", headers=headers
        ) as resp:
            await resp.read()
            if resp.status < 300 or resp.status == 404:
                return None
            return f"cache {row.url} answered {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as e:
        return f"cannot reach cache {row.url}: {e!r}"


async def deliver(directory: Directory, rows: list[PendingDelete]) -> set[int]:
    """Sends the claimed rows (at most node_requests_inflight_max at once); deletes the
    delivered ones and reschedules the rest. The ids delivered."""
    if not rows:
        return set()
    limit = asyncio.Semaphore(directory.config.node_requests_inflight_max)

    async def one(row: PendingDelete) -> str | None:
        async with limit:
            return await _send(directory, row)

    outcomes = await asyncio.gather(*(one(r) for r in rows))
    done = {r.id for r, err in zip(rows, outcomes, strict=True) if err is None}
    pd = schema.pending_deletes
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        if done:
            await conn.execute(pd.delete().where(pd.c.id.in_(sorted(done))))
        for row, err in zip(rows, outcomes, strict=True):
            if err is None:
                continue
            await conn.execute(
                pd.update()
                .where(pd.c.id == row.id)
                .values(
                    attempts=row.attempts + 1,
                    next_try_unix_s=now
                    + backoff_s(row.attempts, directory.config.delete_retry_s_max),
                    last_error=err[:ERROR_CHARS_MAX],
                )
            )
    directory.counters["deletes_delivered"] += len(done)
    directory.counters["delete_failures"] += len(rows) - len(done)
    return done


async def claim_due(directory: Directory) -> list[PendingDelete]:
    """Due rows whose node is alive, claimed for one attempt."""
    config = directory.config
    pd, n = schema.pending_deletes, schema.nodes
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        result = await conn.execute(
            sa.select(pd, n.c.url)
            .join(n, n.c.node_id == pd.c.node_id)
            .where(
                pd.c.next_try_unix_s <= now,
                n.c.last_heartbeat_unix_s > now - config.node_timeout_s,
            )
            .order_by(pd.c.next_try_unix_s)
            .limit(config.loop_batch_max)
        )
        rows = [_row(r._mapping) for r in result]
        if rows:
            await conn.execute(
                pd.update()
                .where(pd.c.id.in_([r.id for r in rows]))
                .values(next_try_unix_s=now + config.node_request_timeout_s + 1.0)
            )
    return rows


def _row(m: Any) -> PendingDelete:
    return PendingDelete(
        id=int(m["id"]),
        volume_id=int(m["volume_id"]),
        key=int(m["key"]),
        alt_key=None if m["alt_key"] is None else int(m["alt_key"]),
        node_id=m["node_id"],
        target_role=m["target_role"],
        url=m["url"],
        attempts=int(m["attempts"]),
    )


async def delete_pass(directory: Directory) -> None:
    await deliver(directory, await claim_due(directory))


async def pending_count(directory: Directory) -> int:
    pd = schema.pending_deletes
    async with directory.db.snapshot() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(pd))).scalar() or 0)


async def replica_deletes_pending(conn: Any, volume_id: int) -> int:
    """Deletes of `volume_id` still owed to a replica (store or f4), in `conn`'s view."""
    pd = schema.pending_deletes
    q = (
        sa.select(sa.func.count())
        .select_from(pd)
        .where(pd.c.volume_id == volume_id, pd.c.target_role.in_(sorted(REPLICA_ROLES)))
    )
    return int((await conn.execute(q)).scalar() or 0)
