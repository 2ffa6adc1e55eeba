"""The store node's HTTP API (docs/api/store.md) on the lean HTTP server.

Every route but /healthz takes an internal credential (common/credentials.py), the purpose
in brackets. Data path:
    GET|HEAD /n/{volume}/{key}/{alt_key}/{cookie}   read, the cookie checked too [read]
    GET|HEAD /n/{volume}/{key}/{alt_key}            read without the cookie [read]: the
                                                    cookie comes back in X-Pinhole-Cookie
    PUT      /n/{volume}/{key}/{alt_key}/{cookie}   write [write];
                                                    X-Pinhole-Repair: 1 for a repair write
    DELETE   /n/{volume}/{key}[/{alt_key}]           delete one or every variant [write]
Administration:
    GET /healthz (open)   GET /metrics [metrics or admin]   GET /status [admin]
    GET /volumes  POST /volumes  GET /volumes/{id}  DELETE /volumes/{id} [admin]
    POST /volumes/{id}/state [admin]   GET /volumes/{id}/dat?offset=&length= [node or admin]
    POST|GET /volumes/{id}/compact|verify|scrub|pull [admin]

Errors become HTTP answers in exactly one place, `error_for`, from the attributes of the
store's error classes (store/errors.py: status, code, headers); `handle` is the one place
that catches, for the synchronous part of a request and for its coroutine alike. A read
served from the page cache is answered inside the protocol callback, with no Task and no
executor hop; a plain GET's hit by one C call when the extension is loaded (store/native),
and, when one read holds exactly such a GET, before the server's parser sees it (`fast`:
the raw bytes parsed by the C `parse_get`, the same answer byte for byte).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Final

from common.credentials import Credentials, Purpose
from common.ids import parse_decimal
from common.json_logs import AccessLog
from common.leanhttp import Request, Response, error_response, guarded, json_response
from common.leanhttp.message import FastAnswer
from common.leanhttp.observe import fast_answer, observed
from common.request_metrics import RequestMetrics, RequestObserver
from store import errors, needle
from store.errors import (
    JobNotFound,
    NeedlePathInvalid,
    RangeNotSatisfiable,
    RouteNotFound,
    StoreBadRequest,
)
from store.node import StoreNode
from store.node_jobs import job_json
from store.registry import VOLUME_ID_MAX
from store.volume_pull import DAT_READ_BYTES_MAX
from store.volume_read import NeedleRead
from store.volume_state import Mode

log = logging.getLogger("pinhole.store")

IMMUTABLE: Final = "public, max-age=31536000, immutable"
OCTETS: Final = "application/octet-stream"
COOKIE_HEX_DIGITS: Final = 16
ADMIN_BODY_BYTES_MAX: Final = 64 * 1024

_UNAUTHORIZED = error_response(401, "unauthorized", "a valid internal credential is required")
_READ, _WRITE, _NODE, _ADMIN, _METRICS = (
    Purpose.READ,
    Purpose.WRITE,
    Purpose.NODE,
    Purpose.ADMIN,
    Purpose.METRICS,
)
# Offsets in a volume file are below 2^40 (superblock.OFFSET_UNITS_MAX units of 32 bytes).
DAT_OFFSET_MAX: Final = 2**40
# Range positions of more digits (> 10^18 bytes) exceed any needle: the header is ignored.
RANGE_DIGITS_MAX: Final = 18
_PUT_ANSWER = b'{"volume_id":%d,"key":"%d","alt_key":%d,"size":%d,"etag":"\\"%016x\\""}'


# Route templates by the number of slashes of a needle path.
_NEEDLE_ROUTES: Final = {
    3: "/n/{volume}/{key}",
    4: "/n/{volume}/{key}/{alt_key}",
    5: "/n/{volume}/{key}/{alt_key}/{cookie}",
}
_GET_ROUTE: Final = _NEEDLE_ROUTES[5]
_VOLUME_ACTIONS: Final = frozenset(("state", "dat", "pull", "compact", "verify", "scrub"))
_ADMIN_ROUTES: Final = frozenset(("status", "healthz", "metrics", "volumes"))


def route_of(req: Request) -> str:
    """The route template of a request (the `route` of its metrics and access line)."""
    path = req.path
    if path.startswith("/n/"):
        return _NEEDLE_ROUTES.get(path.count("/"), "unmatched")
    parts = [p for p in path.split("/") if p]
    if len(parts) == 1 and parts[0] in _ADMIN_ROUTES:
        return "/" + parts[0]
    if len(parts) in (2, 3) and parts[0] == "volumes":
        if len(parts) == 2:
            return "/volumes/{id}"
        if parts[2] in _VOLUME_ACTIONS:
            return "/volumes/{id}/" + parts[2]
    return "unmatched"


def error_for(exc: BaseException) -> Response:
    """The one place where an exception becomes an HTTP answer."""
    if isinstance(exc, errors.StoreError):
        body = {"error": {"code": exc.code, "message": exc.public_message or str(exc)}}
        return json_response(exc.status, body, tuple(exc.headers().items()))
    if isinstance(exc, ValueError):
        return error_response(400, "bad_request", str(exc))
    if isinstance(exc, OSError):
        log.error("I/O error: %s", exc)
        return error_response(500, "io_error", f"I/O error: {exc.strerror or exc}")
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal", "internal server error")


_NOT_FOUND = error_for(errors.NeedleNotFound("no such needle"))


def _decimal(text: str, what: str, limit: int) -> int:
    # Canonical decimal only: one URL per needle (caches key on it).
    try:
        return parse_decimal(text, maximum=limit, what=what)
    except ValueError as e:
        raise StoreBadRequest(str(e)) from None


def _cookie(text: str) -> int:
    if len(text) != COOKIE_HEX_DIGITS or not all(c in "0123456789abcdef" for c in text):
        raise StoreBadRequest(f"cookie must be {COOKIE_HEX_DIGITS} lower-case hex digits")
    return int(text, 16)


def parse_needle_path(path: str, *, cookie: bool) -> tuple[int, int, int | None, int | None]:
    """(volume, key, alt_key, cookie) from /n/{volume}/{key}/{alt_key}/{cookie}. Without
    `cookie` (deletes) the alt_key is optional and no cookie is taken."""
    parts = path.split("/")
    n = len(parts)
    if (cookie and n != 6) or (not cookie and n not in (4, 5)):
        raise NeedlePathInvalid("expected /n/{volume}/{key}/{alt_key}/{cookie}")
    vid = _decimal(parts[2], "volume", VOLUME_ID_MAX)
    key = _decimal(parts[3], "key", needle.KEY_MAX)
    alt = _decimal(parts[4], "alt_key", needle.ALT_KEY_MAX) if n >= 5 else None
    ck = _cookie(parts[5]) if cookie else None
    return vid, key, alt, ck


_NEEDLE_PATH = re.compile(
    r"/n/(0|[1-9][0-9]{0,9})/(0|[1-9][0-9]{0,19})/(0|[1-9][0-9]{0,9})/([0-9a-f]{16})"
)


def fast_needle_path(path: str) -> tuple[int, int, int, int]:
    """(volume, key, alt_key, cookie) of a canonical needle path, in about a microsecond;
    anything else goes to parse_needle_path for a precise error."""
    m = _NEEDLE_PATH.fullmatch(path)
    if m is not None:
        vid, key, alt = int(m[1]), int(m[2]), int(m[3])
        if vid <= VOLUME_ID_MAX and key <= needle.KEY_MAX and alt <= needle.ALT_KEY_MAX:
            return vid, key, alt, int(m[4], 16)
    vid, key, alt_or_none, cookie = parse_needle_path(path, cookie=True)
    assert alt_or_none is not None and cookie is not None
    return vid, key, alt_or_none, cookie


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single byte range; None to ignore the header (multiple ranges or
    a unit we do not serve); raises RangeNotSatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or len(first) > RANGE_DIGITS_MAX or len(last) > RANGE_DIGITS_MAX:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise ValueError
            return max(0, size - suffix), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        raise RangeNotSatisfiable("range not satisfiable")
    return start, min(end, size)


def needle_response(req: Request, read: NeedleRead) -> Response:
    """200 / 206 / 304 / 416 for a verified needle, with the immutable caching headers."""
    etag = f'"{read.checksum:016x}"'
    inm = req.headers.get("if-none-match")
    if inm is not None and (
        inm == etag or inm == "*" or etag in (t.strip() for t in inm.split(","))
    ):
        return Response(304, b"", (("etag", etag), ("cache-control", IMMUTABLE)))
    data = read.data
    headers = [("etag", etag), ("cache-control", IMMUTABLE), ("accept-ranges", "bytes")]
    rng = req.headers.get("range")
    if rng is not None:
        if_range = req.headers.get("if-range")
        if if_range is None or if_range == etag:
            size = len(data)
            try:
                span = _parse_range(rng, size)
            except RangeNotSatisfiable:
                return Response(
                    416,
                    b"",
                    (("content-range", f"bytes */{size}"), ("etag", etag)),
                )
            if span is not None:
                start, end = span
                headers.append(("content-range", f"bytes {start}-{end - 1}/{size}"))
                return Response(206, data[start:end], headers, OCTETS)
    return Response(200, data, headers, OCTETS)


class StoreHttpApi:
    """Handler, head hook and body limit for LeanHTTPServer."""

    def __init__(
        self,
        node: StoreNode,
        *,
        credentials: Credentials,
        access_log: AccessLog | None = None,
        native: bool = True,
    ) -> None:
        """`native` False leaves every read to the pure-Python path even when the node has
        the C hot read loaded (to compare the two on one node)."""
        self.node = node
        self._credentials = credentials
        self._hot_read = node.read_path.hot_read if native else None
        self.requests = RequestMetrics("pinhole_store")
        self._observer = RequestObserver(self.requests, access_log)
        # (method, first path segment) -> (handler, the purposes that may call it)
        self._routes: dict[
            tuple[str, str], tuple[Callable[[Request, list[str]], Any], tuple[Purpose, ...]]
        ] = {
            ("GET", "status"): (self._status, (_ADMIN,)),
            ("GET", "healthz"): (self._healthz, ()),
            ("GET", "metrics"): (self._metrics, (_METRICS, _ADMIN)),
            ("GET", "volumes"): (self._volumes, (_ADMIN,)),
            ("POST", "volumes"): (self._create_volume, (_ADMIN,)),
        }
        # The error middleware: every error of a request, raised before or after its first
        # await, is answered by error_for here.
        # Outside it, each request is counted, timed and logged with its id.
        self.handle = observed(
            guarded(self._route, error_for),
            self._observer,
            route_of,
        )
        # The server's fast path (LeanHTTPServer `fast`): with the C hot read only.
        self.fast = None if self._hot_read is None else self._fast_get
        # The needle (volume, key, alt_key, cookie) whose page-cache read the fast path just
        # found missing. The server parses the same bytes next and calls `_get` before it
        # returns to the loop, which then goes straight to the device: one
        # preadv2(RWF_NOWAIT) per cold GET, not two (the first starts the kernel's read, and
        # a second could find the pages it brought in and skip the disk queue).
        self._missed: tuple[int, int, int, int] | None = None

    # -- the three entry points --------------------------------------------------------------

    def _route(self, req: Request) -> Response | Awaitable[Response]:
        if req.path.startswith("/n/"):
            method = req.method
            if method == "GET" or method == "HEAD":
                return self._get(req)
            if method == "PUT":
                return self._put(req)
            if method == "DELETE":
                return self._delete(req)
            return error_response(405, "method_not_allowed", f"{method} is not allowed here")
        return self._admin(req)

    def head_hook(self, req: Request) -> Response | None:
        """Rejects a write before its body is read: bad path, no credential, no volume."""
        method = req.method
        if method not in ("PUT", "POST", "DELETE"):
            return None
        needle = req.path.startswith("/n/")
        if not self._authorized(req, _WRITE if needle else _ADMIN):
            return _UNAUTHORIZED
        if method == "PUT":
            try:
                vid, _, _, _ = self._needle_path(req.path)
                self.node.volume(vid)
            except Exception as e:
                return error_for(e)
        return None

    def _needle_path(self, path: str) -> tuple[int, int, int, int]:
        """(volume, key, alt_key, cookie) of a needle path with its cookie: the C parser
        for a canonical one, else the Python one, which gives the precise error."""
        hot = self._hot_read
        parsed = None if hot is None else hot.parse_path(path)
        return parsed if parsed is not None else fast_needle_path(path)

    def _authorized(self, req: Request, *purposes: Purpose) -> bool:
        return self._credentials.allows(req.headers.get("authorization"), *purposes)

    def body_limit(self, req: Request) -> int:
        if req.method == "PUT":
            return self.node.config.volume.needle_data_bytes_max
        return ADMIN_BODY_BYTES_MAX

    # -- data path ---------------------------------------------------------------------------

    def _get(self, req: Request) -> Response | Awaitable[Response]:
        missed, self._missed = self._missed, None
        if not self._credentials.allows(req.headers.get("authorization"), _READ):
            return _UNAUTHORIZED
        hot = self._hot_read
        try:
            vid, key, alt, cookie = self._needle_path(req.path)
        except (StoreBadRequest, NeedlePathInvalid):
            if req.path.count("/") == 4:  # /n/{volume}/{key}/{alt_key}: no cookie
                return self._internal_get(req)
            raise
        if hot is not None and "range" not in req.headers and "if-none-match" not in req.headers:
            if missed == (vid, key, alt, cookie):  # the fast path's read of these bytes
                return self._get_from_disk(req, vid, key, alt, cookie)
            # A plain GET or HEAD: one C call reads, checks and frames a page-cache hit.
            got = self.node.read_path.answer_cached(vid, key, alt, cookie)
            if type(got) is tuple:
                return Response(200, got[1], (), OCTETS, got[0])
            if got == hot.MISS:
                return self._get_from_disk(req, vid, key, alt, cookie)
        read = self.node.read_cached(vid, key, alt, cookie)
        if read is not None:
            return needle_response(req, read)
        return self._get_from_disk(req, vid, key, alt, cookie)

    def _fast_get(self, data: bytes, date: bytes) -> FastAnswer | None:
        """A plain GET or HEAD served from the page cache, answered from the raw bytes of
        its read: the C call `parse_get` takes only a whole request of the plainest shape
        (one canonical needle path, no range or validators, nothing pipelined behind it),
        and `answer_cached` reads, checks and frames the hit. Anything else (another shape,
        a wrong credential, a miss, not found, corrupt, a volume not here) is None, and the
        server parses the bytes and `handle` answers them as always; after a miss, `_get`
        reads from the device without trying the page cache again. The request is counted,
        timed and logged as `observed` does."""
        hot = self._hot_read
        assert hot is not None
        got = hot.parse_get(data, self.node.config.request_header_bytes_max, b"/n/")
        if got is None:
            return None
        started = time.perf_counter()
        head_only, vid, key, alt, cookie, authorization, request_id, close = got
        if _READ not in self._credentials.granted(authorization):
            return None
        try:
            answer = self.node.read_path.answer_cached(vid, key, alt, cookie)
        except errors.StoreError:  # not a volume of this node: the handler's precise 404
            return None
        if type(answer) is not tuple:
            if answer == hot.MISS:
                self._missed = (vid, key, alt, cookie)
            return None
        resp = Response(200, answer[1], (), OCTETS, answer[0])
        return fast_answer(
            self._observer,
            resp,
            head_only=head_only,
            close=close,
            date=date,
            request_id=request_id,
            route=_GET_ROUTE,
            started=started,
        )

    async def _get_from_disk(
        self, req: Request, vid: int, key: int, alt: int, cookie: int
    ) -> Response:
        read = await self.node.read(vid, key, alt, cookie)
        return needle_response(req, read)

    def _internal_get(self, req: Request) -> Response | Awaitable[Response]:
        vid, key, alt, _ = parse_needle_path(req.path, cookie=False)
        assert alt is not None
        return self._internal_read(vid, key, alt)

    async def _internal_read(self, vid: int, key: int, alt: int) -> Response:
        read, cookie = await self.node.read_internal(vid, key, alt)
        headers = (
            ("etag", f'"{read.checksum:016x}"'),
            ("x-pinhole-cookie", f"{cookie:016x}"),
            # The answer carries the cookie: no shared cache may keep it.
            ("cache-control", "no-store"),
        )
        return Response(200, read.data, headers, OCTETS)

    async def _put(self, req: Request) -> Response:
        vid, key, alt, cookie = self._needle_path(req.path)
        repair = req.headers.get("x-pinhole-repair", "0")
        if repair not in ("0", "1"):
            raise StoreBadRequest("x-pinhole-repair must be 1 or 0")
        checksum = None
        given = req.headers.get("x-pinhole-checksum")
        if given is not None:
            try:
                checksum = int(given, 16)
            except ValueError:
                raise StoreBadRequest(
                    "x-pinhole-checksum must be hex (xxh3_64 of the data)"
                ) from None
        result = await self.node.put(
            vid, key, alt, cookie, req.body, data_checksum=checksum, repair=repair == "1"
        )
        # One answer per write: formatted, not json.dumps'd (every field is a number).
        body = _PUT_ANSWER % (vid, key, alt, len(req.body), result.checksum)
        return Response(201, body, (), "application/json")

    async def _delete(self, req: Request) -> Response:
        vid, key, alt, _ = parse_needle_path(req.path, cookie=False)
        result = await self.node.delete(vid, key, alt)
        if result.deleted == 0:
            return _NOT_FOUND
        return json_response(200, {"deleted": result.deleted})

    # -- administration ----------------------------------------------------------------------

    def _admin(self, req: Request) -> Response | Awaitable[Response]:
        parts = [p for p in req.path.split("/") if p]
        if not parts:
            raise RouteNotFound("no such resource")
        route = self._routes.get((req.method, parts[0])) if len(parts) == 1 else None
        if route is not None:
            handler, purposes = route
            if purposes and not self._authorized(req, *purposes):
                return _UNAUTHORIZED
            result: Response | Awaitable[Response] = handler(req, parts)
            return result
        if parts[0] == "volumes" and len(parts) in (2, 3):
            action = parts[2] if len(parts) == 3 else ""
            if action == "dat" and req.method == "GET":
                if not self._authorized(req, _NODE, _ADMIN):
                    return _UNAUTHORIZED
            elif not self._authorized(req, _ADMIN):
                return _UNAUTHORIZED
            vid = _decimal(parts[1], "volume", VOLUME_ID_MAX)
            if action == "" and req.method == "GET":
                return json_response(200, _volume_json(self.node, vid))
            if action == "" and req.method == "DELETE":
                return self._delete_volume(vid)
            if action == "state" and req.method == "POST":
                return self._set_state(req, vid)
            if action == "dat" and req.method == "GET":
                return self._read_dat(req, vid)
            if action == "pull" and req.method == "POST":
                return self._start_pull(req, vid)
            if action == "pull" and req.method == "GET":
                job = self.node.jobs.get((vid, "pull"))
                if job is None:
                    raise JobNotFound(f"no pull of volume {vid} has run")
                return json_response(200, job_json(job))
            if action in ("compact", "verify", "scrub"):
                if req.method == "POST":
                    return self._start_job(req, vid, action)
                if req.method == "GET":
                    job = self.node.jobs.get((vid, action))
                    self.node.volume(vid)
                    if job is None:
                        raise JobNotFound(f"no {action} has run on volume {vid}")
                    return json_response(200, job_json(job))
        raise RouteNotFound(f"no route for {req.method} {req.path}")

    def _status(self, req: Request, parts: list[str]) -> Response:
        st = self.node.statistics()
        doc = asdict(st)
        return json_response(200, doc)

    def _healthz(self, req: Request, parts: list[str]) -> Response:
        return json_response(200, {"ok": True, "volumes": len(self.node.volumes)})

    def _metrics(self, req: Request, parts: list[str]) -> Response:
        from store.metrics import render

        body, content_type = render(self.node, self.requests)
        return Response(200, body, (), content_type)

    def _volumes(self, req: Request, parts: list[str]) -> Response:
        return json_response(200, {"volumes": [asdict(v) for v in self.node.statistics().volumes]})

    async def _create_volume(self, req: Request, parts: list[str]) -> Response:
        body = _json_body(req)
        vid = body.get("volume_id")
        if not isinstance(vid, int) or isinstance(vid, bool):
            raise StoreBadRequest("volume_id (an integer) is required")
        vol = await self.node.create_volume(vid)
        return json_response(201, asdict(vol.statistics()))

    async def _set_state(self, req: Request, vid: int) -> Response:
        body = _json_body(req)
        try:
            mode = Mode(str(body.get("mode")))
        except ValueError:
            raise StoreBadRequest("mode must be writable, read_only or sealed") from None
        await self.node.set_mode(vid, mode)
        return json_response(200, _volume_json(self.node, vid))

    async def _delete_volume(self, vid: int) -> Response:
        await self.node.delete_volume(vid)
        return json_response(200, {"volume_id": vid, "deleted": True})

    def _read_dat(self, req: Request, vid: int) -> Response | Awaitable[Response]:
        params = req.query_params()
        offset = _decimal(params.get("offset", "0"), "offset", DAT_OFFSET_MAX)
        length = _decimal(params.get("length", str(DAT_READ_BYTES_MAX)), "length", 2**63)
        if length > DAT_READ_BYTES_MAX:
            raise StoreBadRequest(
                f"length must be at most {DAT_READ_BYTES_MAX} bytes", code="length_too_large"
            )
        self.node.volume(vid)
        return self._read_dat_async(vid, offset, length)

    async def _read_dat_async(self, vid: int, offset: int, length: int) -> Response:
        chunk = await self.node.read_dat(vid, offset, length)
        headers = (
            ("x-pinhole-volume-end", str(chunk.volume_end)),
            ("x-pinhole-compaction-revision", str(chunk.compaction_revision)),
        )
        return Response(200, chunk.data, headers, OCTETS)

    def _start_pull(self, req: Request, vid: int) -> Response:
        body = _json_body(req)
        source = body.get("source")
        if not isinstance(source, str) or not source:
            raise StoreBadRequest("source (the URL of a store node holding the volume) is required")
        rate = body.get("bytes_per_s_max")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0
        ):
            raise StoreBadRequest("bytes_per_s_max must be a positive number")
        job = self.node.start_pull(vid, source, bytes_per_s_max=rate)
        return json_response(202, job_json(job))

    def _start_job(self, req: Request, vid: int, kind: str) -> Response:
        body = _json_body(req) if req.body else {}
        rate = body.get("bytes_per_s_max")
        if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
            raise StoreBadRequest("bytes_per_s_max must be a positive number")
        job = self.node.start_job(vid, kind, bytes_per_s_max=rate)
        return json_response(202, job_json(job))


def _json_body(req: Request) -> dict[str, Any]:
    if not req.body:
        return {}
    try:
        doc = json.loads(req.body)
    except ValueError:
        raise StoreBadRequest("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise StoreBadRequest("the body must be a JSON object")
    return doc


def _volume_json(node: StoreNode, vid: int) -> dict[str, Any]:
    return asdict(node.volume(vid).statistics())
