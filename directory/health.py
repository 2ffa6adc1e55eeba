"""Writability: the health pass, failure reports and operator orders.

The rule itself lives in ClusterState.writability (computed on every read). The health
pass stores each volume's computed writability and reason (so the table shows it), logs
every transition, and logs `no_writable_volume` at error level while it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from directory import schema
from directory.errors import BadRequest, VolumeNotFound
from directory.schema import LOCK

if TYPE_CHECKING:
    from directory.service import Directory

REASON_CHARS_MAX = 200


async def health_pass(directory: Directory) -> None:
    state = await directory.state()
    lv = schema.logical_volumes
    changes: list[tuple[int, bool, str | None]] = []
    for info in state.volumes.values():
        writable, reason = state.writability(info)
        if writable != info.writable:
            changes.append((info.volume_id, writable, reason))
    if changes:
        async with directory.db.transaction(lock=LOCK) as conn:
            for vid, writable, _ in changes:
                await conn.execute(
                    lv.update().where(lv.c.volume_id == vid).values(writable=writable)
                )
        for vid, writable, reason in changes:
            if writable:
                directory.log.info("volume %d is writable", vid)
            else:
                directory.log.warning("volume %d is read-only: %s", vid, reason)
    alive = {n.node_id for n in state.nodes.values() if state.alive(n.node_id)}
    for gone in sorted(directory.nodes_seen_alive - alive):
        directory.log.warning(
            "node %s is down (no heartbeat for %.1f s)", gone, state.config.node_timeout_s
        )
    directory.nodes_seen_alive = alive
    if not any(state.writability(v)[0] for v in state.volumes.values()):
        directory.note_alert("no_writable_volume", "no writable logical volume")
    else:
        directory.clear_alert("no_writable_volume")


async def set_readonly(directory: Directory, volume_id: int, body: dict[str, Any]) -> None:
    """A writer's failure report (body has node_id: read-only for readonly_cooldown_s) or
    an operator's order (no node_id: read-only until POST /volumes/{vid}/writable)."""
    reason = body.get("reason", "")
    node_id = body.get("node_id")
    if not isinstance(reason, str) or len(reason) > REASON_CHARS_MAX:
        raise BadRequest(f"reason must be a string of at most {REASON_CHARS_MAX} characters")
    if node_id is not None and not isinstance(node_id, str):
        raise BadRequest("node_id must be a string")
    lv = schema.logical_volumes
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        row = (await conn.execute(sa.select(lv).where(lv.c.volume_id == volume_id))).first()
        if row is None:
            raise VolumeNotFound(f"no logical volume {volume_id}")
        if node_id is not None:
            until = max(row.readonly_until_unix_s, now + directory.config.readonly_cooldown_s)
            values: dict[str, Any] = {
                "readonly_until_unix_s": until,
                "readonly_reason": f"write_failure on {node_id}: {reason}"[:REASON_CHARS_MAX],
                "writable": False,
            }
        else:
            values = {
                "operator_readonly": True,
                "readonly_reason": f"operator: {reason}"[:REASON_CHARS_MAX]
                if reason
                else "operator",
                "writable": False,
            }
        await conn.execute(lv.update().where(lv.c.volume_id == volume_id).values(**values))
    directory.log.warning("volume %d made read-only: %s", volume_id, values["readonly_reason"])


async def clear_operator_order(directory: Directory, volume_id: int) -> None:
    """Clears an operator's read-only order (and any failure cooldown): the health rule
    decides again."""
    lv = schema.logical_volumes
    async with directory.db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            lv.update()
            .where(lv.c.volume_id == volume_id)
            .values(operator_readonly=False, readonly_reason=None, readonly_until_unix_s=0.0)
        )
        if result.rowcount == 0:
            raise VolumeNotFound(f"no logical volume {volume_id}")
