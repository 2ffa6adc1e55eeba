"""Repairs: a bad copy of one needle on one replica, rewritten from a healthy replica.

POST /repairs records a pending repair (one per (volume, key, alt_key, node) at a time).
The repair loop claims due repairs (as deletes do), reads the needle from another ready,
alive replica with the store's internal read (`GET /n/{vid}/{key}/{alt}` plus the
credential: the bytes and `X-Pinhole-Cookie`), and writes them to the bad node with
`PUT /n/{vid}/{key}/{alt}/{cookie}` and `X-Pinhole-Repair: 1` (accepted even on a
read-only volume). A needle no healthy replica has (deleted since) needs no repair.
After repair_attempts_max failures a repair is `failed` and stays listed for operators.

The f4 tier repairs itself (online reconstruction, the rebuilder): a report naming an f4
node, or about a volume in state f4, is answered 409 repaired_by_f4 and nothing is
scheduled; the f4 switch removes the pending repairs of the replicas it releases.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import sqlalchemy as sa
import xxhash

from common import ids
from common.credentials import Purpose
from common.photo import ALT_KEY_MAX, KEY_MAX, VOLUME_ID_MAX
from directory import schema
from directory.deletes import ERROR_CHARS_MAX, backoff_s
from directory.errors import BadRequest, RepairedByF4, VolumeNotFound
from directory.registry import NODE_ID_CHARS_MAX
from directory.schema import LOCK, LogicalVolumeState, NodeRole, RepairState
from directory.state import ClusterState
from store.client import needle_path

if TYPE_CHECKING:
    from directory.service import Directory

REASON_CHARS_MAX: Final = 200


@dataclass(frozen=True, slots=True)
class Repair:
    id: int
    volume_id: int
    key: int
    alt_key: int
    node_id: str
    attempts: int


def _int(value: object, name: str, high: int) -> int:
    if isinstance(value, str):  # keys travel as strings too (they exceed 2^53)
        try:
            return ids.parse_decimal(value, maximum=high, what=name)
        except ValueError:
            raise BadRequest(f"{name} must be an integer within 0..{high}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise BadRequest(f"{name} must be an integer within 0..{high}")
    return value


async def record(directory: Directory, body: dict[str, Any]) -> dict[str, Any]:
    vid = _int(body.get("volume_id"), "volume_id", VOLUME_ID_MAX)
    key = _int(body.get("key"), "key", KEY_MAX)
    alt = _int(body.get("alt_key"), "alt_key", ALT_KEY_MAX)
    node_id = body.get("node_id")
    reason = body.get("reason", "")
    if not isinstance(node_id, str) or not 0 < len(node_id) <= NODE_ID_CHARS_MAX:
        raise BadRequest("node_id must be a non-empty string")
    if not isinstance(reason, str) or len(reason) > REASON_CHARS_MAX:
        raise BadRequest(f"reason must be a string of at most {REASON_CHARS_MAX} characters")
    t, rp, n, lv = schema.repairs, schema.replicas, schema.nodes, schema.logical_volumes
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        lv_state = await conn.scalar(sa.select(lv.c.state).where(lv.c.volume_id == vid))
        role = await conn.scalar(sa.select(n.c.role).where(n.c.node_id == node_id))
        if lv_state == LogicalVolumeState.F4 or role == NodeRole.F4:
            raise RepairedByF4(f"volume {vid} on {node_id}: the f4 cell repairs its copies itself")
        replica = (
            await conn.execute(
                sa.select(rp.c.node_id).where(rp.c.volume_id == vid, rp.c.node_id == node_id)
            )
        ).first()
        if replica is None:
            raise VolumeNotFound(f"node {node_id} holds no replica of volume {vid}")
        same = (
            await conn.execute(
                sa.select(t.c.id).where(
                    t.c.volume_id == vid,
                    t.c.key == str(key),
                    t.c.alt_key == alt,
                    t.c.node_id == node_id,
                    t.c.state == RepairState.PENDING,
                )
            )
        ).first()
        if same is not None:
            return {"id": int(same.id), "state": RepairState.PENDING, "duplicate": True}
        result = await conn.execute(
            t.insert().values(
                volume_id=vid,
                key=str(key),
                alt_key=alt,
                node_id=node_id,
                reason=reason,
                state=RepairState.PENDING,
                attempts=0,
                next_try_unix_s=now,
                created_unix_s=now,
                updated_unix_s=now,
                last_error=None,
            )
        )
        pk = result.inserted_primary_key
        assert pk is not None
    directory.log.warning(
        "repair queued: volume %d key %d/%d on %s (%s)", vid, key, alt, node_id, reason
    )
    return {"id": int(pk[0]), "state": RepairState.PENDING, "duplicate": False}


async def listing(directory: Directory) -> list[dict[str, Any]]:
    """Pending repairs, then the most recent finished ones (repairs_listed_max)."""
    t = schema.repairs
    async with directory.db.snapshot() as conn:
        pending = await conn.execute(
            sa.select(t).where(t.c.state == RepairState.PENDING).order_by(t.c.id)
        )
        out = [_json(r._mapping) for r in pending]
        finished = await conn.execute(
            sa.select(t)
            .where(t.c.state != RepairState.PENDING)
            .order_by(t.c.updated_unix_s.desc())
            .limit(directory.config.repairs_listed_max)
        )
        out += [_json(r._mapping) for r in finished]
    return out


def _json(m: Any) -> dict[str, Any]:
    return {
        "id": int(m["id"]),
        "volume_id": int(m["volume_id"]),
        "key": m["key"],
        "alt_key": int(m["alt_key"]),
        "node_id": m["node_id"],
        "reason": m["reason"],
        "state": m["state"],
        "attempts": int(m["attempts"]),
        "created_unix_s": m["created_unix_s"],
        "updated_unix_s": m["updated_unix_s"],
        "last_error": m["last_error"],
    }


async def _claim(directory: Directory) -> list[Repair]:
    config = directory.config
    t = schema.repairs
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        rows = [
            Repair(int(r.id), int(r.volume_id), int(r.key), int(r.alt_key), r.node_id, r.attempts)
            for r in await conn.execute(
                sa.select(t)
                .where(t.c.state == RepairState.PENDING, t.c.next_try_unix_s <= now)
                .order_by(t.c.next_try_unix_s)
                .limit(config.loop_batch_max)
            )
        ]
        if rows:
            await conn.execute(
                t.update()
                .where(t.c.id.in_([r.id for r in rows]))
                .values(next_try_unix_s=now + 2 * config.node_request_timeout_s + 1.0)
            )
    return rows


async def _read_source(directory: Directory, url: str, r: Repair) -> tuple[bytes, int] | str | None:
    """(data, cookie); None when the source has no such needle; else the error text."""
    headers = {"Authorization": directory.credentials.header(Purpose.READ)}
    try:
        async with directory.session.get(
            f"{url}/n/{r.volume_id}/{r.key}/{r.alt_key}", headers=headers
        ) as resp:
            body = await resp.read()
            if resp.status == 404 and _error_code(body) == "not_found":
                return None
            if resp.status != 200:
                return f"{url} answered {resp.status}"
            cookie = int(resp.headers.get("X-Pinhole-Cookie", ""), 16)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        return f"cannot read from {url}: {e!r}"
    # The store verified the needle's checksum before answering 200 (the ETag is that
    # checksum, seeded by the needle header, so it cannot be recomputed from the body
    # alone); the repair PUT carries X-Pinhole-Checksum so the bad node checks transit.
    return body, cookie


def _error_code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


async def _repair_one(directory: Directory, state: ClusterState, r: Repair) -> str | None:
    """None when done (repaired, or nothing to repair), else the error."""
    lv = state.volumes.get(r.volume_id)
    target = state.nodes.get(r.node_id)
    if lv is None or target is None or all(x.node_id != r.node_id for x in lv.replicas):
        return None  # the replica is gone: nothing to repair
    if lv.state == LogicalVolumeState.F4 or target.role == NodeRole.F4:
        return None  # the f4 cell repairs itself
    if not state.alive(r.node_id):
        return f"{r.node_id} is down"
    if await _delete_pending(directory, r):
        # A replica not reached by the delete yet still has the needle: copying it back
        # would bring a deleted photo back to life. The delete wins.
        return None
    sources = [x for x in state.ready_alive(lv) if x.node_id != r.node_id]
    if not sources:
        return "no healthy replica to copy from"
    errors: list[str] = []
    absent = 0
    for src in sources:
        got = await _read_source(directory, state.nodes[src.node_id].url, r)
        if got is None:
            absent += 1
            continue
        if isinstance(got, str):
            errors.append(got)
            continue
        data, cookie = got
        headers = {
            "Authorization": directory.credentials.header(Purpose.WRITE),
            "X-Pinhole-Repair": "1",
            "X-Pinhole-Checksum": f"{xxhash.xxh3_64_intdigest(data):016x}",
            "Content-Type": "application/octet-stream",
        }
        path = needle_path(r.volume_id, r.key, r.alt_key, cookie)
        try:
            async with directory.session.put(target.url + path, data=data, headers=headers) as resp:
                await resp.read()
                if resp.status == 201:
                    return None
                return f"{target.url} refused the repair write: {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            return f"cannot write to {target.url}: {e!r}"
    if absent == len(sources):
        return None  # deleted everywhere healthy: the bad copy's delete is the deletes' job
    return "; ".join(errors)


async def _delete_pending(directory: Directory, r: Repair) -> bool:
    t = schema.pending_deletes
    async with directory.db.snapshot() as conn:
        q = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(
                t.c.volume_id == r.volume_id,
                t.c.key == str(r.key),
                t.c.target_role == NodeRole.STORE,
                sa.or_(t.c.alt_key.is_(None), t.c.alt_key == r.alt_key),
            )
        )
        return bool((await conn.execute(q)).scalar())


async def repair_pass(directory: Directory) -> None:
    claimed = await _claim(directory)
    if not claimed:
        return
    state = await directory.state()
    limit = asyncio.Semaphore(directory.config.node_requests_inflight_max)

    async def one(r: Repair) -> str | None:
        async with limit:
            return await _repair_one(directory, state, r)

    outcomes = await asyncio.gather(*(one(r) for r in claimed))
    t = schema.repairs
    config = directory.config
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        for r, err in zip(claimed, outcomes, strict=True):
            if err is None:
                values: dict[str, Any] = {"state": RepairState.DONE, "updated_unix_s": now}
                directory.counters["repairs_done"] += 1
            else:
                attempts = r.attempts + 1
                values = {
                    "attempts": attempts,
                    "state": RepairState.FAILED
                    if attempts >= config.repair_attempts_max
                    else RepairState.PENDING,
                    "next_try_unix_s": now + backoff_s(r.attempts, config.delete_retry_s_max),
                    "last_error": err[:ERROR_CHARS_MAX],
                    "updated_unix_s": now,
                }
                directory.counters["repair_failures"] += 1
            await conn.execute(t.update().where(t.c.id == r.id).values(**values))


async def pending_count(directory: Directory) -> int:
    t = schema.repairs
    async with directory.db.snapshot() as conn:
        q = sa.select(sa.func.count()).select_from(t).where(t.c.state == RepairState.PENDING)
        return int((await conn.execute(q)).scalar() or 0)
