"""The f4 name node's HTTP API (docs/api/f4.md): the store's read and delete protocol, so
routers, caches and the directory's deletes reach a migrated volume unchanged.

    GET|HEAD /n/{volume}/{key}/{alt_key}/{cookie}   a blob, decrypted [read]
    DELETE   /n/{volume}/{key}[/{alt_key}]          destroy its key(s) [write]
    POST     /tickets                               read tickets of several blobs [read]
    GET /healthz (open)   GET /status [admin]   GET /metrics [metrics or admin]

Answers match a store node's byte for byte where a reader can compare them: the same
ETag (the needle checksum of the same bytes), the same caching headers, ranges and 304s
(store.http_api.needle_response), the same 404 for absent, deleted and wrong-cookie
blobs, volume_not_found for a volume the cell does not serve, each error's code also in
X-Pinhole-Error (replica.read tells a missing needle from a missing volume by it). A
stripe that cannot be read answers 503 (a reader tries its other replicas; the router
answers 502).

A GET carrying `X-Pinhole-Read-Ticket: v1` (and no Range or If-None-Match: what
replica.read sends) may be answered with a read ticket instead of the blob: 200 with the
same header, Content-Type application/vnd.pinhole.read-ticket+json and the ticket document
(common/read_ticket.py, docs/formats/f4.md). Every answer but that 200 is the one the GET
without the header gets; a store node ignores the header and sends the needle.

POST /tickets asks for the tickets of up to TICKETS_PER_REQUEST_MAX blobs at once (a
reader's misses that queued while its previous ticket request was in flight; body and
answer in common/read_ticket.py and docs/formats/f4.md): a ticket document or null per
blob, null wherever the GET would not answer a ticket, so absent, deleted and wrong-cookie
blobs still get their one answer, the 404 of the plain GET. A body that is not a batch is
400 bad_request, one with more reads 413 too_many_reads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from common import read_ticket
from common.credentials import Credentials, Purpose
from common.errors import PinholeError
from common.json_logs import AccessLog
from common.leanhttp import Request, Response, error_response, guarded, json_response
from common.leanhttp.observe import observed
from common.request_metrics import RequestMetrics, RequestObserver
from f4.metrics import render_name_node
from f4.name_node import NameNode, Ticket
from store import needle
from store.errors import StoreError
from store.http_api import fast_needle_path, needle_response, parse_needle_path
from store.http_api import route_of as store_route_of
from store.volume_read import NeedleRead

log = logging.getLogger("pinhole.f4")

_HEADER_ROOM: Final = bytes(needle.HEADER_BYTES)
_UNAUTHORIZED: Final = error_response(
    401, "unauthorized", "a valid internal credential is required"
)
_TICKET_ASKED: Final = read_ticket.TICKET_HEADER.lower()
_TICKET_ANSWER: Final = ((read_ticket.TICKET_HEADER, read_ticket.TICKET_HEADER_VALUE),)
_BATCH_TYPE: Final = read_ticket.BATCH_CONTENT_TYPE


def route_of(req: Request) -> str:
    """The store's read and delete protocol has the same routes; POST /tickets is ours."""
    if req.path == read_ticket.BATCH_PATH:
        return read_ticket.BATCH_PATH
    return store_route_of(req)


def error_for(exc: BaseException) -> Response:
    """The one place where an exception becomes an HTTP answer."""
    if isinstance(exc, PinholeError):
        # X-Pinhole-Error as a store sends it: readers tell a missing needle (not_found)
        # from a missing volume (volume_not_found, try the next replica) by it.
        body = {"error": {"code": exc.code, "message": exc.message or str(exc)}}
        headers = {**exc.headers(), "x-pinhole-error": exc.code}
        return json_response(exc.status, body, tuple(headers.items()))
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal", "internal server error")


class NameNodeHttpApi:
    def __init__(
        self,
        node: NameNode,
        *,
        credentials: Credentials,
        status: Callable[[], dict[str, Any]] | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.node = node
        self._credentials = credentials
        self._status = status or node.statistics
        self.requests = RequestMetrics("pinhole_f4_name")
        self.handle = observed(
            guarded(self._route, error_for),
            RequestObserver(self.requests, access_log),
            route_of,
        )

    def _allowed(self, req: Request, *purposes: Purpose) -> bool:
        return self._credentials.allows(req.headers.get("authorization"), *purposes)

    def _route(self, req: Request) -> Response | Awaitable[Response]:
        path, method = req.path, req.method
        if path.startswith("/n/"):
            if method in ("GET", "HEAD"):
                if not self._allowed(req, Purpose.READ):
                    return _UNAUTHORIZED
                return self._read(req, *fast_needle_path(path))
            if method == "DELETE":
                if not self._allowed(req, Purpose.WRITE):
                    return _UNAUTHORIZED
                vid, key, alt, _ = parse_needle_path(path, cookie=False)
                return self._delete(vid, key, alt)
            return error_response(405, "method_not_allowed", "blobs take GET, HEAD and DELETE")
        if path == read_ticket.BATCH_PATH:
            if method != "POST":
                return error_response(405, "method_not_allowed", "tickets are asked by POST")
            if not self._allowed(req, Purpose.READ):
                return _UNAUTHORIZED
            return self._tickets(req)
        if method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", f"{method} is not allowed here")
        if path == "/healthz":
            return json_response(200, {"ok": True})
        if path == "/status":
            if not self._allowed(req, Purpose.ADMIN):
                return _UNAUTHORIZED
            return json_response(200, self._status())
        if path == "/metrics":
            if not self._allowed(req, Purpose.METRICS, Purpose.ADMIN):
                return _UNAUTHORIZED
            body, content_type = render_name_node(
                self.node, self.node.config.name_node_id, self.requests
            )
            return Response(200, body, (), content_type)
        return error_response(404, "not_found", f"no route for {method} {path}")

    async def _read(self, req: Request, vid: int, key: int, alt: int, cookie: int) -> Response:
        headers = req.headers
        ticket = (
            headers.get(_TICKET_ASKED) == read_ticket.TICKET_HEADER_VALUE
            and req.method == "GET"
            and "range" not in headers
            and "if-none-match" not in headers
        )
        got = await self.node.read(vid, key, alt, cookie, ticket=ticket)
        if isinstance(got, Ticket):
            return Response(200, got.document, _TICKET_ANSWER, read_ticket.CONTENT_TYPE)
        data, checksum = got
        # needle_response cuts the data out of a needle's bytes after its header.
        return needle_response(req, NeedleRead(_HEADER_ROOM + data, len(data), checksum, 0))

    async def _tickets(self, req: Request) -> Response:
        try:
            paths = read_ticket.parse_batch_request(req.body)
            reads = [fast_needle_path(p) for p in paths]
        except read_ticket.BatchInvalid as e:
            status = 413 if e.code == "too_many_reads" else 400
            return error_response(status, e.code, str(e))
        except StoreError as e:  # a path that is not a needle's
            return error_response(400, "bad_request", f"not a needle path: {e}")
        documents = await self.node.tickets(reads)
        return Response(200, read_ticket.batch_answer(documents), (), _BATCH_TYPE)

    async def _delete(self, vid: int, key: int, alt: int | None) -> Response:
        deleted = await self.node.delete(vid, key, alt)
        return json_response(200, {"volume_id": vid, "key": str(key), "deleted": deleted})
