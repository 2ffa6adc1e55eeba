"""Node registration by heartbeat, and the node listings.

A node registers with its first heartbeat and stays known forever (an operator removes
its replicas, not the node). Roles: `store` (Haystack volumes, in a failure domain
"dc/rack/host"), `cache`, and `f4` (an f4 name node: its `volumes` are the migrated ones
it serves, every one `sealed`); caches and f4 nodes sit in no failure domain ("-/-/-")
and never take part in placement. A heartbeat from a node that was down makes its pending
deletes and repairs due at once, so a returning replica catches up without waiting out
its backoff.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from common.photo import VOLUME_ID_MAX
from directory import schema
from directory.errors import BadRequest
from directory.placement import parse_failure_domain
from directory.schema import LOCK, NodeRole
from directory.state import ClusterState
from store.volume_state import Mode

if TYPE_CHECKING:
    from directory.service import Directory

NODE_ID_CHARS_MAX: Final = 200
URL_CHARS_MAX: Final = 500
# The heartbeat fields the directory keeps per volume (the rest are statistics it ignores).
_VOLUME_FIELDS: Final = ("mode", "reason", "size_bytes", "size_bytes_max")


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadRequest(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def _int(value: object, name: str, *, low: int = 0, high: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer within {low}..{high}")
    return value


def parse_heartbeat(body: dict[str, Any]) -> dict[str, Any]:
    """The validated heartbeat, or BadRequest naming the field."""
    node_id = _text(body, "node_id", NODE_ID_CHARS_MAX)
    role = body.get("role")
    if role not in tuple(NodeRole):
        raise BadRequest("role must be one of " + ", ".join(f"'{r}'" for r in NodeRole))
    url = _text(body, "url", URL_CHARS_MAX).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BadRequest("url must be an http:// or https:// base URL")
    domain = _text(body, "failure_domain", 300) if role == NodeRole.STORE else "-/-/-"
    if role == NodeRole.STORE:
        try:
            parse_failure_domain(domain)
        except ValueError as e:
            raise BadRequest(str(e)) from None
    free = _int(body.get("free_bytes", 0), "free_bytes")
    raw_volumes = body.get("volumes", [])
    if not isinstance(raw_volumes, list):
        raise BadRequest("volumes must be a list")
    volumes = []
    for v in raw_volumes:
        if not isinstance(v, dict):
            raise BadRequest("each volume must be an object")
        vid = _int(v.get("volume_id"), "volumes[].volume_id", high=VOLUME_ID_MAX)
        mode = v.get("mode")
        if mode not in tuple(Mode):
            raise BadRequest("volumes[].mode must be writable, read_only or sealed")
        if role == NodeRole.F4 and mode != Mode.SEALED:
            raise BadRequest("an f4 node serves sealed volumes only: volumes[].mode must be sealed")
        kept = {k: v[k] for k in _VOLUME_FIELDS if k in v}
        volumes.append({"volume_id": vid, **kept})
    return {
        "node_id": node_id,
        "role": role,
        "url": url,
        "failure_domain": domain,
        "free_bytes": free,
        "volumes": volumes,
    }


async def heartbeat(directory: Directory, body: dict[str, Any]) -> dict[str, Any]:
    hb = parse_heartbeat(body)
    config = directory.config
    t = schema.nodes
    async with directory.db.transaction(lock=LOCK) as conn:
        now = directory.clock.now()
        row = (await conn.execute(sa.select(t).where(t.c.node_id == hb["node_id"]))).first()
        values = {
            "role": hb["role"],
            "url": hb["url"],
            "failure_domain": hb["failure_domain"],
            "free_bytes": hb["free_bytes"],
            "last_heartbeat_unix_s": now,
            "volumes_json": json.dumps(hb["volumes"]),
        }
        if row is None:
            await conn.execute(
                t.insert().values(node_id=hb["node_id"], first_heartbeat_unix_s=now, **values)
            )
            directory.log.info(
                "node %s (%s) registered at %s", hb["node_id"], hb["role"], hb["url"]
            )
        else:
            await conn.execute(t.update().where(t.c.node_id == hb["node_id"]).values(**values))
            if now - row.last_heartbeat_unix_s >= config.node_timeout_s:
                directory.log.info("node %s is back", hb["node_id"])
                for table in (schema.pending_deletes, schema.repairs):
                    await conn.execute(
                        table.update()
                        .where(table.c.node_id == hb["node_id"])
                        .values(next_try_unix_s=now)
                    )
    return {"interval_s": config.heartbeat_interval_s}


def caches_json(state: ClusterState) -> list[dict[str, Any]]:
    return [
        {"node_id": n.node_id, "url": n.url}
        for n in sorted(state.nodes.values(), key=lambda n: n.node_id)
        if n.role == NodeRole.CACHE and state.alive(n.node_id)
    ]
