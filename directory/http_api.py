"""The directory's HTTP API (docs/api/directory.md) as an aiohttp application.

One middleware turns every error into `{"error": {"code", "message"}}`: the package's
PinholeError tree (directory/errors.py and any other package's) by its
`status`/`code`/`headers()`, aiohttp's own HTTP errors (unknown route 404,
405, body over request_body_bytes_max 413) by theirs, anything else 500 `internal`. The
same middleware checks the internal credential of every route but /healthz against the
purposes `make_app` lists for it (common/credentials.py): lookups take read, the write
path's calls write, heartbeats node, the rest admin.

Volume lookups answer from a snapshot of the state (`Directory.lookup_state`), so a flood of
lookups, of unknown volume ids included, costs no state load per request.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from aiohttp import web

from common import ids
from common.aiohttp_observe import observe_middleware
from common.credentials import Purpose
from common.errors import PinholeError
from common.json_logs import AccessLog
from common.photo import ALT_KEY_MAX, KEY_MAX, VOLUME_ID_MAX
from common.request_metrics import RequestMetrics, RequestObserver
from directory import deletes, growth, health, moves, registry, repairs, tiering
from directory.errors import BadRequest, Unauthorized, VolumeNotFound
from directory.metrics import render as render_metrics
from directory.schema import LogicalVolumeState
from directory.service import Directory
from directory.state import ClusterState

log = logging.getLogger("pinhole.directory")

DIRECTORY: Final = web.AppKey("directory", Directory)
# (method, route path) -> the purposes whose credential it takes; () = open.
PURPOSES: Final = web.AppKey("purposes", dict)
REQUESTS: Final = web.AppKey("requests", RequestMetrics)

Handler = Any


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        route = request.match_info.route
        canonical = route.resource.canonical if route.resource is not None else ""
        purposes = request.app[PURPOSES].get((route.method, canonical))
        if purposes is None and route.method == "HEAD":
            purposes = request.app[PURPOSES].get(("GET", canonical))
        if purposes is None:
            # No such route (or method): only a caller with the admin credential learns
            # which (404 or 405); anyone else gets 401.
            purposes = (Purpose.ADMIN,)
        if purposes and not _d(request).credentials.allows(
            request.headers.get("Authorization"), *purposes
        ):
            raise Unauthorized("a valid internal credential is required")
        response: web.StreamResponse = await handler(request)
        return response
    except PinholeError as e:
        if not 400 <= e.status <= 599:
            # A peer the directory called was not reached (status 0): its own fault, a 500.
            log.error("directory request %s %s failed: %s", request.method, request.path, e)
            return _error(500, "internal", "internal server error")
        response = _error(e.status, e.code, e.message)
        response.headers.update(e.headers())
        return response
    except web.HTTPRequestEntityTooLarge as e:
        return _error(413, "body_too_large", e.text or "request body too large")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "http_error")
        return _error(e.status, code, e.reason)
    except Exception:
        log.exception("directory request %s %s failed", request.method, request.path)
        return _error(500, "internal", "internal server error")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def _vid(text: str) -> int:
    try:
        return ids.parse_decimal(text, maximum=VOLUME_ID_MAX, what="volume id")
    except ValueError:
        raise BadRequest(f"volume id must be a decimal number within 0..{VOLUME_ID_MAX}") from None


def _int_field(body: dict[str, Any], name: str, high: int, *, required: bool = True) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, str):  # 64-bit keys travel as strings in JSON
        try:
            return ids.parse_decimal(value, maximum=high, what=name)
        except ValueError:
            raise BadRequest(f"{name} must be an integer within 0..{high}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise BadRequest(f"{name} must be an integer within 0..{high}")
    return value


def _d(request: web.Request) -> Directory:
    return request.app[DIRECTORY]


def alerts(directory: Directory, state: ClusterState) -> list[str]:
    out = set(directory.alerts)
    if not any(state.writability(v)[0] for v in state.volumes.values()):
        out.add("no_writable_volume")
    else:
        out.discard("no_writable_volume")
    return sorted(out)


# On lookups: the highest volume id the answer's snapshot knows, so a router can answer an
# unknown id above it without asking again for each one (router/lookup.py).
VOLUME_ID_MAX_HEADER: Final = "X-Pinhole-Volume-Id-Max"


async def _volume_answer(directory: Directory, vid: int) -> web.Response:
    state = await directory.state()
    lv = state.volumes.get(vid)
    if lv is None:
        raise VolumeNotFound(f"no logical volume {vid}")
    return web.json_response(state.volume_json(lv))


# -- handlers -------------------------------------------------------------------------------


async def heartbeat(request: web.Request) -> web.Response:
    return web.json_response(await registry.heartbeat(_d(request), await _body(request)))


async def nodes(request: web.Request) -> web.Response:
    state = await _d(request).state()
    return web.json_response(
        {
            "nodes": [
                state.node_json(n) for n in sorted(state.nodes.values(), key=lambda n: n.node_id)
            ]
        }
    )


async def caches(request: web.Request) -> web.Response:
    state = (await _d(request).lookup_state()).state
    return web.json_response({"caches": registry.caches_json(state)})


async def volumes(request: web.Request) -> web.Response:
    state = await _d(request).state()
    return web.json_response({"volumes": [state.volume_json(v) for v in state.volumes.values()]})


async def volume(request: web.Request) -> web.Response:
    """A lookup, from the snapshot (Directory.lookup_state)."""
    vid = _vid(request.match_info["vid"])
    snapshot = await _d(request).lookup_state(volume_id=vid)
    state = snapshot.state
    headers = {VOLUME_ID_MAX_HEADER: str(snapshot.volume_id_max)}
    lv = state.volumes.get(vid)
    if lv is None:
        message = f"no logical volume {vid}"
        body = {"error": {"code": VolumeNotFound.code, "message": message}}
        return web.json_response(body, status=VolumeNotFound.status, headers=headers)
    return web.json_response(state.volume_json(lv), headers=headers)


async def writable(request: web.Request) -> web.Response:
    directory = _d(request)
    state = await directory.state()
    out = []
    for lv in state.volumes.values():
        if state.writability(lv)[0]:
            out.append(
                {
                    "volume_id": lv.volume_id,
                    "replicas": [state.nodes[r.node_id].url for r in lv.replicas],
                    "node_ids": [r.node_id for r in lv.replicas],
                }
            )
    return web.json_response({"volumes": out, "alerts": alerts(directory, state)})


async def create_volumes(request: web.Request) -> web.Response:
    directory = _d(request)
    body = await _body(request)
    count = _int_field(body, "count", directory.config.volumes_create_max)
    assert count is not None
    if count < 1:
        raise BadRequest(f"count must be within 1..{directory.config.volumes_create_max}")
    vids = await growth.create_volumes(directory, count, partial=False)
    state = await directory.state()
    return web.json_response(
        {"volumes": [state.volume_json(state.volumes[v]) for v in vids]}, status=201
    )


async def set_readonly(request: web.Request) -> web.Response:
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    await health.set_readonly(directory, vid, await _body(request))
    return await _volume_answer(directory, vid)


async def set_writable(request: web.Request) -> web.Response:
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    await health.clear_operator_order(directory, vid)
    return await _volume_answer(directory, vid)


async def post_delete(request: web.Request) -> web.Response:
    body = await _body(request)
    vid = _int_field(body, "volume_id", VOLUME_ID_MAX)
    key = _int_field(body, "key", KEY_MAX)
    alt = _int_field(body, "alt_key", ALT_KEY_MAX, required=False)
    assert vid is not None and key is not None
    return web.json_response(await deletes.record(_d(request), vid, key, alt))


async def post_repair(request: web.Request) -> web.Response:
    return web.json_response(await repairs.record(_d(request), await _body(request)), status=202)


async def get_repairs(request: web.Request) -> web.Response:
    return web.json_response({"repairs": await repairs.listing(_d(request))})


async def plan_replication(request: web.Request) -> web.Response:
    state = await _d(request).state()
    return web.json_response({"moves": moves.replication_plan(state)})


async def plan_balance(request: web.Request) -> web.Response:
    state = await _d(request).state()
    return web.json_response({"moves": moves.balance_plan(state)})


async def add_replica(request: web.Request) -> web.Response:
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    await moves.add_replica(directory, vid, await _body(request))
    return await _volume_answer(directory, vid)


async def replica_ready(request: web.Request) -> web.Response:
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    await moves.replica_ready(directory, vid, request.match_info["node_id"])
    return await _volume_answer(directory, vid)


async def remove_replica(request: web.Request) -> web.Response:
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    await moves.remove_replica(directory, vid, request.match_info["node_id"])
    return await _volume_answer(directory, vid)


async def f4_begin(request: web.Request) -> web.Response:
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    await tiering.begin(directory, vid, await _body(request))
    return await _volume_answer(directory, vid)


async def f4_switch(request: web.Request) -> web.Response:
    """The volume view plus {"released": [...], "bytes_released"} (tiering.switch)."""
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    released = await tiering.switch(directory, vid, await _body(request))
    state = await directory.state()
    lv = state.volumes.get(vid)
    if lv is None:
        raise VolumeNotFound(f"no logical volume {vid}")
    return web.json_response({**state.volume_json(lv), **released})


async def f4_abort(request: web.Request) -> web.Response:
    directory = _d(request)
    vid = _vid(request.match_info["vid"])
    await tiering.abort(directory, vid, await _body(request))
    return await _volume_answer(directory, vid)


async def status_doc(directory: Directory) -> dict[str, Any]:
    state = await directory.state()
    alive = [n for n in state.nodes.values() if state.alive(n.node_id)]
    replica_count = directory.config.replica_count
    return {
        "nodes_alive": len(alive),
        "nodes_down": len(state.nodes) - len(alive),
        "volumes": len(state.volumes),
        "volumes_by_state": {
            st.value: sum(1 for v in state.volumes.values() if v.state == st)
            for st in LogicalVolumeState
        },
        "writable_volumes": sum(1 for v in state.volumes.values() if state.writability(v)[0]),
        "under_replicated_volumes": sum(
            1
            for v in state.volumes.values()
            if v.state == LogicalVolumeState.ACTIVE and len(state.ready_alive(v)) < replica_count
        ),
        "pending_deletes": await deletes.pending_count(directory),
        "pending_repairs": await repairs.pending_count(directory),
        "alerts": alerts(directory, state),
        # What lookups cost the database: the snapshots Directory.lookup_state loaded.
        "process": {
            **directory.statistics(),
            "lookup_loads": directory.lookup_loads,
            "id_max_checks": directory.id_max_checks,
        },
    }


async def status(request: web.Request) -> web.Response:
    return web.json_response(await status_doc(_d(request)))


async def healthz(request: web.Request) -> web.Response:
    await _d(request).state()  # the database answers
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = render_metrics(await status_doc(_d(request)), request.app[REQUESTS])
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_app(directory: Directory, *, access_log: AccessLog | None = None) -> web.Application:
    """The directory's API; `access_log`: where its one line per request goes (none: only
    the request metrics)."""
    requests = RequestMetrics("pinhole_directory")
    app = web.Application(
        middlewares=[observe_middleware(RequestObserver(requests, access_log)), error_middleware],
        client_max_size=directory.config.request_body_bytes_max,
    )
    app[DIRECTORY] = directory
    app[REQUESTS] = requests
    read, write, node, admin = Purpose.READ, Purpose.WRITE, Purpose.NODE, Purpose.ADMIN
    routes: list[tuple[str, str, Handler, tuple[Purpose, ...]]] = [
        ("GET", "/healthz", healthz, ()),
        ("GET", "/status", status, (admin,)),
        ("GET", "/metrics", metrics, (Purpose.METRICS, admin)),
        ("POST", "/heartbeat", heartbeat, (node,)),
        ("GET", "/nodes", nodes, (admin,)),
        ("GET", "/caches", caches, (read, admin)),
        ("GET", "/volumes", volumes, (admin,)),
        ("POST", "/volumes", create_volumes, (admin,)),
        ("GET", "/volumes/{vid}", volume, (read, write, admin)),
        # A writer reports the volume a replica failed on.
        ("POST", "/volumes/{vid}/readonly", set_readonly, (write, admin)),
        ("POST", "/volumes/{vid}/writable", set_writable, (admin,)),
        ("POST", "/volumes/{vid}/replicas", add_replica, (admin,)),
        ("POST", "/volumes/{vid}/replicas/{node_id}/ready", replica_ready, (admin,)),
        ("DELETE", "/volumes/{vid}/replicas/{node_id}", remove_replica, (admin,)),
        ("POST", "/volumes/{vid}/f4/begin", f4_begin, (admin,)),
        ("POST", "/volumes/{vid}/f4/switch", f4_switch, (admin,)),
        ("POST", "/volumes/{vid}/f4/abort", f4_abort, (admin,)),
        ("GET", "/writable", writable, (write, admin)),
        ("POST", "/deletes", post_delete, (write, admin)),
        # Readers, scrubbers and writers report bad copies.
        ("POST", "/repairs", post_repair, (read, node, write, admin)),
        ("GET", "/repairs", get_repairs, (admin,)),
        ("GET", "/plan/replication", plan_replication, (admin,)),
        ("GET", "/plan/balance", plan_balance, (admin,)),
    ]
    app[PURPOSES] = {(method, path): purposes for method, path, _, purposes in routes}
    for method, path, handler, _ in routes:
        app.router.add_route(method, path, handler)
    return app
