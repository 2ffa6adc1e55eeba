"""The cache node's HTTP API (docs/api/cache.md) on the lean server.

Routes:

* ``GET|HEAD /c/{vid}/{key}/{alt}/{cookie}`` (read credential): a hit is answered
  synchronously (no Task); a miss returns a coroutine that awaits the flight. Request
  headers ``X-Pinhole-Replicas`` (store base URLs, preferred first; at most
  ``REPLICAS_PER_REQUEST_MAX``; needed on a miss only) and ``X-Pinhole-Admit`` (1|0,
  default 1). Both steer what the cache fetches and keeps, so they are taken only from a
  caller that proves the read credential: without it, 401 before anything is looked at.
  When one read from the socket holds exactly one plain GET or HEAD of a cached needle,
  it is answered before the server's parser sees it (``fast``: the raw bytes parsed by
  store/native's C ``parse_get``, the same answer byte for byte); anything else is parsed
  and routed as usual.
* ``DELETE /c/{vid}/{key}`` (write credential): forget every variant.
* ``GET /healthz`` (open), ``GET /status`` (admin), ``GET /metrics`` (metrics or admin).

Errors become JSON ``{"error": {"code", "message"}}`` with the code also in
``X-Pinhole-Error`` in exactly one place, ``_error_response``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import asdict
from typing import Final

from cache.errors import CacheRequestError
from cache.lru import CachedNeedle, NeedleKey
from cache.metrics import render_metrics
from cache.node import CacheNode
from common import ids
from common.credentials import Credentials, Purpose
from common.errors import PinholeError
from common.json_logs import AccessLog
from common.leanhttp import Handler, Request, Response, encode_header_lines, json_response
from common.leanhttp.message import FastAnswer
from common.leanhttp.observe import fast_answer, observed
from common.photo import ALT_KEY_MAX, KEY_MAX, VOLUME_ID_MAX
from common.request_metrics import RequestMetrics, RequestObserver
from store.native import RequestParser, request_parser

__all__ = ["REPLICAS_PER_REQUEST_MAX", "CacheHttpApi"]

REPLICAS_PER_REQUEST_MAX: Final = 16
_OCTETS: Final = "application/octet-stream"
_HEX: Final = frozenset("0123456789abcdef")


def _error_response(exc: PinholeError) -> Response:
    """The one place errors become HTTP answers: the error's status, code and headers."""
    headers = [(name.lower(), value) for name, value in exc.headers().items()]
    headers.append(("x-pinhole-error", exc.code))
    return json_response(exc.status, {"error": {"code": exc.code, "message": str(exc)}}, headers)


def _number(text: str, maximum: int, what: str) -> int:
    try:
        return ids.parse_decimal(text, maximum=maximum, what=what)
    except ValueError as e:
        raise CacheRequestError(400, "bad_path", str(e)) from None


def _cookie(text: str) -> int:
    if len(text) != 16 or not _HEX.issuperset(text):
        raise CacheRequestError(400, "bad_path", "cookie must be 16 lower-case hex digits")
    return int(text, 16)


def _replicas(header: str | None) -> list[str]:
    if not header:
        raise CacheRequestError(400, "no_replicas", "a miss needs the X-Pinhole-Replicas header")
    urls = [u.strip() for u in header.split(",") if u.strip()]
    if len(urls) > REPLICAS_PER_REQUEST_MAX:
        raise CacheRequestError(
            400, "bad_replicas", f"more than {REPLICAS_PER_REQUEST_MAX} replicas in one request"
        )
    for url in urls:
        if not url.startswith("http://") or len(url) <= 7:
            raise CacheRequestError(400, "bad_replicas", f"replica {url!r} is not an http:// URL")
    if not urls:
        raise CacheRequestError(400, "no_replicas", "a miss needs the X-Pinhole-Replicas header")
    return urls


_ROUTES: Final = {
    4: "/c/{vid}/{key}/{alt}/{cookie}",
    2: "/c/{vid}/{key}",
}
_PLAIN_ROUTES: Final = frozenset(("/healthz", "/status", "/metrics"))
_GET_ROUTE: Final = _ROUTES[4]


def route_of(req: Request) -> str:
    """The route template of a request (the `route` of its metrics and access line)."""
    path = req.path
    if path.startswith("/c/"):
        return _ROUTES.get(path.count("/") - 1, "unmatched")
    return path if path in _PLAIN_ROUTES else "unmatched"


class CacheHttpApi:
    def __init__(
        self,
        node: CacheNode,
        *,
        credentials: Credentials,
        access_log: AccessLog | None = None,
        native: bool = True,
    ) -> None:
        """`native` False leaves `fast` None even when the C parser is built."""
        self.node = node
        self._credentials = credentials
        self.requests = RequestMetrics("pinhole_cache")
        self._observer = RequestObserver(self.requests, access_log)
        # Each request counted, timed and logged with its id (sent on to the stores).
        self.handle: Handler = observed(self._handle, self._observer, route_of)
        # The server's fast path for hits (LeanHTTPServer `fast`), with the C parser only.
        self._parser: RequestParser | None = request_parser() if native else None
        self.fast = None if self._parser is None else self._fast_get

    def _require(self, req: Request, *purposes: Purpose) -> None:
        if not self._credentials.allows(req.headers.get("authorization"), *purposes):
            raise CacheRequestError(
                401, "unauthorized", "the internal credential is missing or wrong"
            )

    def _handle(self, req: Request) -> Response | Awaitable[Response]:
        try:
            return self._route(req)
        except PinholeError as exc:
            return _error_response(exc)

    def _route(self, req: Request) -> Response | Awaitable[Response]:
        path = req.path
        method = req.method
        if path.startswith("/c/"):
            parts = path[3:].split("/")
            if len(parts) == 4:
                if method not in ("GET", "HEAD"):
                    raise CacheRequestError(
                        405, "method_not_allowed", f"{method} is not allowed here"
                    )
                self._require(req, Purpose.READ)
                return self._get(req, parts)
            if len(parts) == 2:
                if method != "DELETE":
                    raise CacheRequestError(
                        405, "method_not_allowed", f"{method} is not allowed here"
                    )
                self._require(req, Purpose.WRITE, Purpose.ADMIN)
                return self._delete(req, parts)
            raise CacheRequestError(404, "bad_path", "expected /c/{vid}/{key}/{alt}/{cookie}")
        if method not in ("GET", "HEAD"):
            raise CacheRequestError(405, "method_not_allowed", f"{method} is not allowed here")
        if path == "/healthz":
            return json_response(200, {"ok": True})
        if path == "/status":
            self._require(req, Purpose.ADMIN)
            return json_response(200, asdict(self.node.statistics()))
        if path == "/metrics":
            self._require(req, Purpose.METRICS, Purpose.ADMIN)
            body, content_type = render_metrics(self.node, self.requests)
            return Response(200, body, (), content_type)
        raise CacheRequestError(404, "not_found", f"no route {path}")

    # ------------------------------------------------------------------ needles

    def _get(self, req: Request, parts: list[str]) -> Response | Awaitable[Response]:
        k: NeedleKey = (
            _number(parts[0], VOLUME_ID_MAX, "volume id"),
            _number(parts[1], KEY_MAX, "key"),
            _number(parts[2], ALT_KEY_MAX, "alt key"),
            _cookie(parts[3]),
        )
        entry = self.node.lookup(k)
        if entry is not None:
            return _needle_response(req, entry, "hit")
        headers = req.headers
        replicas = _replicas(headers.get("x-pinhole-replicas"))
        admit = headers.get("x-pinhole-admit", "1").strip() != "0"
        return self._miss(req, k, replicas, admit)

    def _fast_get(self, data: bytes, date: bytes) -> FastAnswer | None:
        """A hit answered from the raw bytes of its read: `parse_get` takes only one whole
        plain GET or HEAD of /c/{vid}/{key}/{alt}/{cookie} (no validators, nothing
        pipelined behind it). Anything else (another shape, a wrong credential, a miss) is
        None: the server parses the bytes and `handle` answers them as always. A miss is
        looked up again there; a lookup that misses changes nothing. Counted, timed and
        logged as `observed` does."""
        parser = self._parser
        assert parser is not None
        got = parser.parse_get(data, self.node.config.request_header_bytes_max, b"/c/")
        if got is None:
            return None
        started = time.perf_counter()
        head_only, vid, key, alt, cookie, authorization, request_id, close = got
        if Purpose.READ not in self._credentials.granted(authorization):
            return None
        entry = self.node.lookup((vid, key, alt, cookie))
        if entry is None:
            return None
        return fast_answer(
            self._observer,
            _needle_response(None, entry, "hit"),
            head_only=head_only,
            close=close,
            date=date,
            request_id=request_id,
            route=_GET_ROUTE,
            started=started,
        )

    async def _miss(self, req: Request, k: NeedleKey, replicas: list[str], admit: bool) -> Response:
        try:
            entry = await self.node.fetch(k, replicas, admit=admit)
        except PinholeError as exc:
            return _error_response(exc)
        return _needle_response(req, entry, "miss")

    def _delete(self, req: Request, parts: list[str]) -> Response:
        vid = _number(parts[0], VOLUME_ID_MAX, "volume id")
        key = _number(parts[1], KEY_MAX, "key")
        return json_response(200, {"forgotten": self.node.forget(vid, key)})


def _needle_response(req: Request | None, entry: CachedNeedle, how: str) -> Response:
    """The answer with `entry`; `req` None for a request without validators."""
    etag = entry.etag
    inm = None if req is None else req.headers.get("if-none-match")
    if inm is not None and (
        inm == etag or inm == "*" or etag in (t.strip() for t in inm.split(","))
    ):
        return Response(304, b"", (("etag", etag), ("x-pinhole-cache", how)))
    if how == "hit":
        # The hot path: this entry's header lines were encoded at its first hit.
        lines = entry.hit_lines
        if not lines:
            lines = entry.hit_lines = encode_header_lines(
                (("etag", etag), ("x-pinhole-cache", "hit"))
            )
        return Response(200, entry.data, (), _OCTETS, lines)
    return Response(200, entry.data, (("etag", etag), ("x-pinhole-cache", how)), _OCTETS)
