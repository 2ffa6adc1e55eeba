"""The f4 storage node's HTTP API (docs/api/f4-node.md) on the lean HTTP server: raw
objects (blocks, sidecars, index copies) of the nodes it serves, `<blocks_root>/<node>`.

    GET  /b/{node}/{name}[?offset=O&length=L]         the object, or exactly L bytes at O
    GET  /b/{node}/{block}?offset=O&length=L&checked=1  the same, checked against the
                                                      block's sidecar (503 block_corrupt)
    HEAD /b/{node}/{name}                             200 with X-Pinhole-Size / 404
    PUT  /b/{node}/{name}                             a whole object of one chunk at most
    DELETE /b/{node}/{name}                           idempotent; the directory fsync'd
    GET|HEAD /b/{node}/                               {"names": [...]} / whether it is up
    DELETE /b/{node}/uploads                          aborts the node's open uploads
    POST /b/{node}/{name}/uploads                     {"upload": id}
    PUT  /b/{node}/{name}/uploads/{id}?offset=O       appends a chunk at O (its size)
    POST /b/{node}/{name}/uploads/{id}/commit         fsync, rename, directory fsync
    DELETE /b/{node}/{name}/uploads/{id}              aborts
    POST /ranges                                      several checked ranges in one answer
    GET /healthz (open)   GET /status (admin)   GET /metrics (metrics or admin)

`POST /ranges` is a degraded read's fetch: the body has one line per range,
`{node} {block} {offset} {length}` (at most RANGES_MAX, lengths summing to at most
RANGE_BYTES_MAX), each read checked as `GET ...&checked=1` reads it. The answer is 200
with `X-Pinhole-Ranges`: one comma-separated entry per line, in order, `200` or
`{status}:{code}` (the status and code a single checked GET of that range would have
answered), and a body of the good ranges' bytes, concatenated in order. A malformed body
is a 400 for the whole request.

A read ticket (common/read_ticket.py, docs/formats/f4.md) stands in for the blocks
credential on exactly one request: `GET /b/{node}/{block}?offset=O&length=L&checked=1
&expires=E&ticket=S`, S the name node's signature over (node, block, O, L, E) with the
ticket key. Any other use of it, an altered range, a forged or expired signature, is 403
(`ticket_invalid`, `ticket_expired`); the range is then read and checked as any other.

Invariants:
- Every route but /healthz takes a credential, checked from the head before any body byte
  is read: /b/ the blocks one, /status the admin one (401 otherwise); a checked range GET
  may instead carry a read ticket for exactly that range (403 when it does not hold).
- No request body is over UPLOAD_CHUNK_BYTES_MAX (a chunk) and no answer over
  RANGE_BYTES_MAX, so a storage node holds a bounded number of bytes per request.
- The event loop never waits for a device: every disk call runs on the node's own thread
  pool (DISK_THREADS), except a short checked range read entirely from the page cache
  (RWF_NOWAIT, INLINE_READ_BYTES_MAX), which cannot wait.
- Errors become HTTP answers in one place (`_error`), from the F4Error's status and code;
  bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Final, TypeVar

from common import read_ticket
from common.credentials import Credentials, Purpose
from common.errors import PinholeError
from common.ids import parse_decimal
from common.json_logs import AccessLog
from common.leanhttp import Handler, Request, Response, error_response, json_response
from common.leanhttp.observe import observed
from common.request_metrics import RequestMetrics, RequestObserver
from f4.block_store import Buffer
from f4.errors import BadBlockRequest, BlockCorrupt
from f4.local_block_store import WouldBlock
from f4.metrics import STORAGE_NODE_COUNTERS, render_storage_node
from f4.node_disk import OBJECT_BYTES_MAX, RANGE_BYTES_MAX, NodeDisks

log = logging.getLogger("pinhole.f4.node")

T = TypeVar("T")

# One upload chunk (a PUT body) is at most this many bytes.
UPLOAD_CHUNK_BYTES_MAX: Final = 8 << 20
# Bodies of the other requests (none carries one that matters).
OTHER_BODY_BYTES_MAX: Final = 4096
# Threads doing disk I/O for one storage node process.
DISK_THREADS: Final = 8
# A checked range up to this long is read on the event loop when the page cache holds it
# all (RWF_NOWAIT); a longer one, or one that would wait for the device, on DISK_THREADS.
INLINE_READ_BYTES_MAX: Final = 256 * 1024
# Ranges in one POST /ranges: a stripe's blocks.
RANGES_MAX: Final = 14
RANGES_HEADER: Final = "X-Pinhole-Ranges"

OCTETS: Final = "application/octet-stream"
SIZE_HEADER: Final = "X-Pinhole-Size"
ERROR_HEADER: Final = "X-Pinhole-Error"
UPLOADS: Final = "uploads"

_OK: Final = json_response(200, {"ok": True})
_UNAUTHORIZED: Final = Response(
    401,
    b'{"error":{"code":"unauthorized","message":"a valid internal credential is required"}}',
    ((ERROR_HEADER, "unauthorized"),),
    "application/json",
)


def _ticket_refused(code: str, message: str) -> Response:
    return json_response(
        403, {"error": {"code": code, "message": message}}, ((ERROR_HEADER, code),)
    )


def _error(exc: BaseException) -> Response:
    """The one place where an exception becomes an answer."""
    if isinstance(exc, PinholeError):
        headers = [(name.lower(), value) for name, value in exc.headers().items()]
        headers.append((ERROR_HEADER, exc.code))  # HEAD answers carry no body
        body = {"error": {"code": exc.code, "message": str(exc)}}
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc)
        return json_response(exc.status, body, headers)
    if isinstance(exc, OSError):
        log.error("I/O error: %s", exc)
        return error_response(500, "io_error", f"I/O error: {exc.strerror or exc}")
    log.error("unexpected error", exc_info=exc)
    return error_response(500, "internal", "internal server error")


def _number(params: dict[str, str], key: str, maximum: int) -> int:
    try:
        return parse_decimal(params[key], maximum=maximum, what=key)
    except KeyError:
        raise BadBlockRequest(f"{key} is required") from None
    except ValueError as e:
        raise BadBlockRequest(str(e)) from None


_PLAIN_ROUTES: Final = frozenset(("/healthz", "/status", "/metrics", "/ranges"))


def route_of(req: Request) -> str:
    """The route template of a request (the `route` of its metrics and access line)."""
    path = req.path
    if not path.startswith("/b/"):
        return path if path in _PLAIN_ROUTES else "unmatched"
    parts = path[3:].split("/")
    if len(parts) == 2:
        if parts[1] == "":
            return "/b/{disk}/"
        return "/b/{disk}/uploads" if parts[1] == UPLOADS else "/b/{disk}/{object}"
    if len(parts) >= 3 and parts[2] == UPLOADS:
        return "/b/{disk}/{object}/uploads" + ("/{upload}" if len(parts) >= 4 else "")
    return "unmatched"


class NodeHttpApi:
    """The handler (`handle`), head hook and body limit for one LeanHTTPServer."""

    def __init__(
        self, disks: NodeDisks, *, credentials: Credentials, access_log: AccessLog | None = None
    ) -> None:
        self.disks = disks
        self._credentials = credentials
        self.requests = RequestMetrics("pinhole_f4_node")
        self.handle: Handler = observed(
            self._handle, RequestObserver(self.requests, access_log), route_of
        )
        self._executor = ThreadPoolExecutor(DISK_THREADS, thread_name_prefix="f4-node-disk")
        # f4.metrics' counters, kept on the event loop.
        self.counters: Counter[str] = Counter({name: 0 for name, _ in STORAGE_NODE_COUNTERS})
        # The range the head hook last let through on a read ticket, parsed, for the same
        # request's handler (compared by identity; pipelining may run another hook between).
        self._ticketed_range: tuple[Request | None, int, int] = (None, 0, 0)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

    async def _disk(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- before the body -----------------------------------------------------------------

    def head_hook(self, req: Request) -> Response | None:
        path = req.path
        if path == "/healthz":
            return None
        if path == "/status":
            purposes: tuple[Purpose, ...] = (Purpose.ADMIN,)
        elif path == "/metrics":
            purposes = (Purpose.METRICS, Purpose.ADMIN)
        else:
            purposes = (Purpose.BLOCKS,)
        if self._credentials.allows(req.headers.get("authorization"), *purposes):
            return None
        if purposes[0] is Purpose.BLOCKS and "ticket=" in req.query:
            return self._ticketed(req)
        return _UNAUTHORIZED

    def _ticketed(self, req: Request) -> Response | None:
        """None when the request is the one checked range GET its read ticket grants."""
        key = self._credentials.ticket_key
        if key is None:
            return _UNAUTHORIZED
        try:
            params = req.query_params()
            parts = req.path[3:].split("/")
            if req.method != "GET" or len(parts) != 2 or params.get("checked") != "1":
                raise read_ticket.TicketRefused(
                    "ticket_invalid", "a read ticket grants one checked range GET"
                )
            offset = _number(params, "offset", OBJECT_BYTES_MAX)
            length = _number(params, "length", RANGE_BYTES_MAX)
            read_ticket.check(
                key,
                parts[0],
                parts[1],
                offset,
                length,
                params.get("expires", ""),
                params.get("ticket", ""),
                now=time.time(),
            )
            self._ticketed_range = (req, offset, length)
        except BadBlockRequest as e:
            self.counters["tickets_refused"] += 1
            return _ticket_refused("ticket_invalid", str(e))
        except read_ticket.TicketRefused as e:
            self.counters["tickets_refused"] += 1
            return _ticket_refused(e.code, str(e))
        self.counters["tickets_accepted"] += 1
        return None

    def body_limit(self, req: Request) -> int:
        return UPLOAD_CHUNK_BYTES_MAX if req.method == "PUT" else OTHER_BODY_BYTES_MAX

    # -- routing ---------------------------------------------------------------------------

    def _handle(self, req: Request) -> Response | Awaitable[Response]:
        path = req.path
        if path == "/healthz":
            return _OK
        if req.method == "GET" and "checked=1" in req.query:
            answer = self._checked_at_once(req)
            if answer is not None:
                return answer
        return self._guarded(req)

    def _checked_at_once(self, req: Request) -> Response | None:
        """A checked range GET answered inside the protocol callback, as a store node answers
        a cached needle: the range is at most INLINE_READ_BYTES_MAX bytes and all in the
        page cache (RWF_NOWAIT), so neither a Task nor a disk thread is worth its cost.
        None sends the request the usual way, which answers it exactly as before: a range
        that would wait for the device, and every error (the usual way reads it again and
        answers the error in `_error`, so nothing about errors differs here)."""
        parts = req.path[3:].split("/")
        if len(parts) != 2 or not req.path.startswith("/b/"):
            return None
        try:
            ticketed = self._ticketed_range
            if ticketed[0] is req:  # its head hook has parsed and checked the range
                _, offset, length = ticketed
                if length > INLINE_READ_BYTES_MAX:
                    return None
            else:
                params = req.query_params()
                if params.get("checked") != "1":
                    return None
                offset = _number(params, "offset", OBJECT_BYTES_MAX)
                length = _number(params, "length", INLINE_READ_BYTES_MAX)
            data = self.disks.read_checked(parts[0], parts[1], offset, length, nowait=True)
        except (WouldBlock, PinholeError, OSError):
            return None
        counters = self.counters
        counters["checked_reads_inline"] += 1
        counters["bytes_read"] += length
        return Response(200, data, (), OCTETS)

    async def _guarded(self, req: Request) -> Response:
        try:
            return await self._route(req)
        except Exception as e:
            return _error(e)

    async def _route(self, req: Request) -> Response:
        path, method = req.path, req.method
        if path == "/status" and method == "GET":
            return json_response(200, await self._disk(self._status))
        if path == "/metrics" and method == "GET":
            disks = await self._disk(self.disks.status)
            body, content_type = render_storage_node(self.counters, disks, self.requests)
            return Response(200, body, (), content_type)
        if path == "/ranges":
            if method != "POST":
                return _not_allowed(req)
            return await self._ranges(req.body)
        if not path.startswith("/b/"):
            return error_response(404, "not_found", "no such route")
        parts = path[3:].split("/")
        if len(parts) < 2:
            return error_response(404, "not_found", "no such route")
        node = parts[0]
        if len(parts) == 2 and parts[1] == "":
            return await self._node(req, node)
        if len(parts) == 2 and parts[1] == UPLOADS and method == "DELETE":
            removed = await self._disk(self.disks.abort_all, node)
            return json_response(200, {"aborted": removed})
        name = parts[1]
        if len(parts) == 2:
            return await self._object(req, node, name)
        if len(parts) >= 3 and parts[2] == UPLOADS:
            return await self._upload(req, node, name, parts[3:])
        return error_response(404, "not_found", "no such route")

    def _status(self) -> dict[str, object]:
        return {"nodes": [asdict(s) for s in self.disks.status()]}

    async def _node(self, req: Request, node: str) -> Response:
        if req.method == "GET":
            return json_response(200, {"names": await self._disk(self.disks.names, node)})
        if req.method == "HEAD":
            await self._disk(self.disks.directory, node)
            return Response(200)
        return _not_allowed(req)

    async def _object(self, req: Request, node: str, name: str) -> Response:
        method = req.method
        if method == "GET":
            params = req.query_params()
            if "offset" in params or "length" in params:
                offset = _number(params, "offset", OBJECT_BYTES_MAX)
                length = _number(params, "length", RANGE_BYTES_MAX)
                checked = params.get("checked")
                if checked is not None and checked != "1":
                    raise BadBlockRequest("checked takes 1")
                if checked:
                    data = await self._checked(node, name, offset, length)
                    return Response(200, data, (), OCTETS)
                data = await self._disk(self.disks.read_range, node, name, offset, length)
            else:
                data = await self._disk(self.disks.read_whole, node, name)
            self.counters["range_reads"] += 1
            self.counters["bytes_read"] += len(data)
            return Response(200, data, (), OCTETS)
        if method == "HEAD":
            size = await self._disk(self.disks.size, node, name)
            return Response(200, b"", ((SIZE_HEADER, str(size)),), OCTETS)
        if method == "PUT":  # a whole object: counted as an upload of one chunk, committed
            size = await self._disk(self.disks.put, node, name, req.body)
            self.counters["chunks_written"] += 1
            self.counters["bytes_written"] += len(req.body)
            self.counters["commits"] += 1
            return json_response(200, {"size": size})
        if method == "DELETE":
            await self._disk(self.disks.delete, node, name)
            return _OK
        return _not_allowed(req)

    async def _checked(self, node: str, block: str, offset: int, length: int) -> Buffer:
        """A checked range on the disk threads: one `_checked_at_once` did not answer (too
        long, not all in the page cache, or an error, which this read raises again)."""
        counters = self.counters
        try:
            data: Buffer = await self._disk(self.disks.read_checked, node, block, offset, length)
        except BlockCorrupt:
            counters["ranges_corrupt"] += 1
            raise
        counters["checked_reads_threaded"] += 1
        counters["bytes_read"] += length
        return data

    async def _ranges(self, body: bytes | bytearray) -> Response:
        """Several checked ranges in one answer (POST /ranges): each read as _checked
        reads one, on the loop from the page cache where it can, the rest in one hand-off
        to a disk thread."""
        wants = _parse_ranges(body)
        entries: list[str] = [""] * len(wants)
        pieces: list[Buffer | None] = [None] * len(wants)
        counters = self.counters
        later: list[int] = []
        for i, (node, block, offset, length) in enumerate(wants):
            try:
                if length > INLINE_READ_BYTES_MAX:
                    later.append(i)
                    continue
                pieces[i] = self.disks.read_checked(node, block, offset, length, nowait=True)
                counters["checked_reads_inline"] += 1
            except WouldBlock:
                later.append(i)
            except PinholeError as e:
                entries[i] = _range_fault(e, counters)
        if later:
            read = await self._disk(self._read_many, [wants[i] for i in later])
            for i, got in zip(later, read, strict=True):
                if isinstance(got, PinholeError):
                    entries[i] = _range_fault(got, counters)
                else:
                    pieces[i] = got
                    counters["checked_reads_threaded"] += 1
        good: list[Buffer] = []
        for i, piece in enumerate(pieces):
            if piece is not None:
                entries[i] = "200"
                counters["bytes_read"] += len(piece)
                good.append(piece)
        counters["range_batches"] += 1
        return Response(200, b"".join(good), ((RANGES_HEADER, ",".join(entries)),), OCTETS)

    def _read_many(self, wants: list[tuple[str, str, int, int]]) -> list[Buffer | PinholeError]:
        out: list[Buffer | PinholeError] = []
        for node, block, offset, length in wants:
            try:
                out.append(self.disks.read_checked(node, block, offset, length))
            except PinholeError as e:
                out.append(e)
        return out

    async def _upload(self, req: Request, node: str, name: str, rest: list[str]) -> Response:
        method = req.method
        if not rest and method == "POST":
            upload_id = await self._disk(self.disks.begin, node, name)
            return json_response(201, {"upload": upload_id})
        if len(rest) == 1 and method == "PUT":
            offset = _number(req.query_params(), "offset", OBJECT_BYTES_MAX)
            size = await self._disk(self.disks.append, node, name, rest[0], offset, req.body)
            self.counters["chunks_written"] += 1
            self.counters["bytes_written"] += len(req.body)
            return json_response(200, {"size": size})
        if len(rest) == 1 and method == "DELETE":
            await self._disk(self.disks.abort, node, name, rest[0])
            return _OK
        if len(rest) == 2 and rest[1] == "commit" and method == "POST":
            size = await self._disk(self.disks.commit, node, name, rest[0])
            self.counters["commits"] += 1
            return json_response(200, {"size": size})
        return _not_allowed(req)


def _parse_ranges(body: bytes | bytearray) -> list[tuple[str, str, int, int]]:
    """POST /ranges' lines, or BadBlockRequest: every line `node block offset length`,
    at most RANGES_MAX of them, lengths summing to at most RANGE_BYTES_MAX."""
    try:
        lines = body.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise BadBlockRequest("ranges are ASCII lines") from None
    if not lines or len(lines) > RANGES_MAX:
        raise BadBlockRequest(f"1 to {RANGES_MAX} ranges, one per line")
    wants: list[tuple[str, str, int, int]] = []
    total = 0
    for line in lines:
        fields = line.split(" ")
        if len(fields) != 4:
            raise BadBlockRequest(f"{line[:80]!r}: a range is `node block offset length`")
        node, block = fields[0], fields[1]
        offset = _number({"offset": fields[2]}, "offset", OBJECT_BYTES_MAX)
        length = _number({"length": fields[3]}, "length", RANGE_BYTES_MAX)
        total += length
        wants.append((node, block, offset, length))
    if total > RANGE_BYTES_MAX:
        raise BadBlockRequest(f"the ranges sum to {total} bytes, over {RANGE_BYTES_MAX}")
    return wants


def _range_fault(exc: PinholeError, counters: Counter[str]) -> str:
    """One range's entry in X-Pinhole-Ranges: what its single GET would have answered."""
    if isinstance(exc, BlockCorrupt):
        counters["ranges_corrupt"] += 1
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc)
    return f"{exc.status}:{exc.code}"


def _not_allowed(req: Request) -> Response:
    return error_response(405, "method_not_allowed", f"{req.method} is not allowed on {req.path}")
