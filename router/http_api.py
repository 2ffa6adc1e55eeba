"""The router's HTTP API (docs/api/router.md) on the lean HTTP server.

    GET|HEAD /p/{volume}/{key}/{cookie}/{rendition}[.{ext}]   a public photo (common/photo.py)
    GET|HEAD /p/{volume}/{key}/{masked}/{rendition}[.{ext}]?e={expiry}&s={sig}
                                                   a private photo (common/signed_photo.py)
    GET /healthz (open)  GET /status (admin credential)  GET /metrics (metrics or admin)

A photo request: parse the URL (strict, common.photo), pick the formats (the extension's,
or Accept's among avif > webp > jpeg > png > gif > heic), look the volume up (cached,
router.lookup), then for each format until one exists: ask the key's cache node
(rendezvous order, router.ring) with the replicas and the admission decision; when the
cache nodes fail, read the replicas directly (replica.read) and report bad copies for
repair. The bytes are fetched whole; conditional and range answers are cut here, so they
hold whatever the cache or store does with those headers.

Every answer about a photo that is not there (absent, deleted, wrong cookie) is the same
404, byte for byte, so a URL cannot be probed; so is every request for an original
(rendition 0) without the internal read credential, whatever its cookie. A signed URL that
is forged or expired answers 403. Public photos are `public, immutable` for a year; signed
ones `private` for at most their remaining lifetime; originals `no-store`. 502 means no
replica answered; 503 that the directory could not be reached for a volume the router has
not seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from common.credentials import Credentials, Purpose
from common.json_logs import AccessLog
from common.leanhttp import (
    Handler,
    LeanHTTPServer,
    Request,
    Response,
    encode_header_lines,
    error_response,
    json_response,
)
from common.leanhttp.client import HttpClientError, LeanHTTPClient
from common.leanhttp.observe import observed
from common.photo import (
    CONTENT_TYPES,
    ORIGINAL_RENDITION,
    Format,
    PhotoPathError,
    PhotoRef,
    formats_for_accept,
    parse_photo_path,
    photo_path,
)
from common.request_metrics import RequestMetrics, RequestObserver
from common.signed_photo import SignedUrlError, is_signed, sign_playlist, verify
from replica.errors import NeedleAbsent, ReplicaReadError, ReplicasUnavailable
from replica.read import needle_etag, read_from_replicas
from replica.ticket_batches import TicketBatches
from router.config import RouterConfig
from router.errors import DirectoryUnavailable
from router.lookup import Directory, VolumeInfo

log = logging.getLogger("pinhole.router")

IMMUTABLE: Final = "public, max-age=31536000, immutable"
NO_STORE: Final = "no-store"

# Pre-encoded header lines of photo answers (see _answer).
_CACHE_CONTROL_LINE: Final = encode_header_lines((("Cache-Control", IMMUTABLE),))
_ORIGINAL_CACHE_CONTROL_LINE: Final = encode_header_lines((("Cache-Control", "private, no-store"),))
_SERVED_LINES: Final = {
    source: encode_header_lines((("Accept-Ranges", "bytes"), ("X-Pinhole-Cache", source)))
    for source in ("hit", "miss", "direct")
}

# The one answer for absent, deleted and wrong-cookie photos (never built per request).
_NOT_FOUND: Final = error_response(404, "not_found", "no such photo")
_VOLUME_NOT_FOUND: Final = error_response(404, "volume_not_found", "no such volume")
_UNAUTHORIZED: Final = error_response(
    401, "unauthorized", "a valid internal credential is required"
)
_NOT_ACCEPTABLE: Final = error_response(
    406,
    "not_acceptable",
    "Accept allows none of image/avif, image/webp, image/jpeg, image/png, image/gif, "
    "image/heic; ask for an exact format with an extension",
)


def _unavailable(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = (("cache-control", NO_STORE), ("retry-after", "1"))
    return Response(status, body, headers, "application/json")


def _refused(code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Response(403, body, (("cache-control", NO_STORE),), "application/json")


_REPLICAS_UNAVAILABLE: Final = _unavailable(
    ReplicasUnavailable.status, ReplicasUnavailable.code, "no replica of this photo answered"
)
_DIRECTORY_UNAVAILABLE: Final = _unavailable(
    DirectoryUnavailable.status,
    DirectoryUnavailable.code,
    "the volume directory cannot be reached",
)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is several times slower
class _Found:
    data: bytes
    etag: str
    source: str  # "hit" | "miss" (through a cache node) | "direct" (replicas read here)


class _Absent:
    pass


class _Unavailable:
    pass


_ABSENT: Final = _Absent()
_UNAVAILABLE: Final = _Unavailable()
_Outcome = _Found | _Absent | _Unavailable


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    """Counters since start. photos_* count answers to photo URLs by outcome; cache_* the
    router -> cache requests; direct_reads the photos read from replicas by the router."""

    photos_served: int
    photos_not_modified: int
    photos_not_found: int
    photos_bad_url: int
    photos_not_acceptable: int
    photos_unavailable: int
    cache_hits: int
    cache_misses: int
    cache_failures: int
    direct_reads: int
    direct_read_failures: int
    direct_reads_ticketed: int
    lookup_refreshes: int
    repair_reports: int
    repair_reports_dropped: int
    signed_served: int
    signed_refused: int


_PLAIN_ROUTES: Final = frozenset(("/healthz", "/status", "/metrics"))


def route_of(req: Request) -> str:
    """The route template of a request (the `route` of its metrics and access line)."""
    path = req.path
    if path.startswith("/p/"):
        return "/p/{volume}/{key}/{cookie}/{variant}"
    return path if path in _PLAIN_ROUTES else "unmatched"


class RouterHttpApi:
    """The handler for LeanHTTPServer (`handle`) and what /status and /metrics read."""

    def __init__(
        self,
        config: RouterConfig,
        directory: Directory,
        client: LeanHTTPClient,
        *,
        credentials: Credentials,
        server_statistics: Callable[[], Any] | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.config = config
        self.requests = RequestMetrics("pinhole_router")
        # Each request counted, timed and logged with its id (sent on to caches and stores).
        self.handle: Handler = observed(
            self._handle, RequestObserver(self.requests, access_log), route_of
        )
        self.directory = directory
        self._client = client
        self._ring = directory.ring
        self._credentials = credentials
        self._auth = credentials.header(Purpose.READ)
        self._read_headers = (("Authorization", self._auth),)
        self._ticket_batches = TicketBatches()  # for its direct reads (cache node down)
        # Without the key every signed URL is refused (403 bad_signature).
        self._url_key = credentials.url_key or b""
        self._loop = asyncio.get_running_loop()
        self.server: LeanHTTPServer | None = None
        self._repair_tasks: set[asyncio.Task[None]] = set()
        self._served = 0
        self._not_modified = 0
        self._not_found = 0
        self._bad_url = 0
        self._not_acceptable = 0
        self._unavailable = 0
        self._cache_hits = 0
        self._cache_misses = 0
        self._cache_failures = 0
        self._direct_reads = 0
        self._direct_read_failures = 0
        self._direct_reads_ticketed = 0
        self._lookup_refreshes = 0
        self._repair_reports = 0
        self._repair_reports_dropped = 0
        self._signed_served = 0
        self._signed_refused = 0

    # -- entry point ----------------------------------------------------------------------

    def _handle(self, req: Request) -> Response | Awaitable[Response]:
        path = req.path
        if path.startswith("/p/"):
            method = req.method
            if method != "GET" and method != "HEAD":
                return error_response(405, "method_not_allowed", "photos take GET and HEAD")
            expiry: int | None = None
            try:
                query = req.query
                if query and is_signed(query):
                    signed = verify(self._url_key, path, query, now=time.time())
                    ref, expiry = signed.ref, signed.expiry
                else:
                    ref = parse_photo_path(path)
            except PhotoPathError as e:
                self._bad_url += 1
                return error_response(404, "bad_path", str(e))
            except SignedUrlError as e:
                self._signed_refused += 1
                return _refused(e.code, str(e))
            if ref.rendition == ORIGINAL_RENDITION and not self._credentials.allows(
                req.headers.get("authorization"), Purpose.READ
            ):
                self._not_found += 1
                return _NOT_FOUND  # exactly what an absent photo gets
            if ref.fmt is not None:
                return self._photo(req, ref, (ref.fmt,), expiry)
            formats = formats_for_accept(req.headers.get("accept"))
            if not formats:
                self._not_acceptable += 1
                return _NOT_ACCEPTABLE
            return self._photo(req, ref, formats, expiry)
        if req.method != "GET" and req.method != "HEAD":
            return error_response(405, "method_not_allowed", f"{req.method} is not allowed here")
        if path == "/healthz":
            return json_response(200, {"ok": True})
        if path == "/status":
            if not self._credentials.allows(req.headers.get("authorization"), Purpose.ADMIN):
                return _UNAUTHORIZED
            return json_response(200, self.status())
        if path == "/metrics":
            if not self._credentials.allows(
                req.headers.get("authorization"), Purpose.METRICS, Purpose.ADMIN
            ):
                return _UNAUTHORIZED
            from router.metrics import render

            body, content_type = render(self)
            return Response(200, body, (), content_type)
        self._bad_url += 1
        return error_response(
            404, "bad_path", "photos are at /p/{volume}/{key}/{cookie}/{rendition}[.{ext}]"
        )

    # -- photos ---------------------------------------------------------------------------

    async def _photo(
        self, req: Request, ref: PhotoRef, formats: tuple[Format, ...], expiry: int | None
    ) -> Response:
        """`expiry`: the signed URL's (None for a public one)."""
        vid = ref.volume_id
        lv = self.directory.volume_now(vid)  # the usual case, without a coroutine
        if lv is None:
            try:
                lv = await self.directory.volume(vid)
            except DirectoryUnavailable:
                self._unavailable += 1
                return _DIRECTORY_UNAVAILABLE
            if lv is None:
                self._not_found += 1
                return _VOLUME_NOT_FOUND
        headers = req.headers
        admit = lv.writable and "via" not in headers and "cdn-loop" not in headers
        rendition_bits = ref.rendition << 8
        for fmt in formats:
            alt = rendition_bits | fmt
            outcome = await self._fetch(lv, ref, alt, admit=admit)
            if outcome is _UNAVAILABLE:
                # The replicas we know failed: the volume may have moved. Look again and
                # try once more when the directory names other replicas.
                self._lookup_refreshes += 1
                try:
                    fresh = await self.directory.refresh(vid)
                except DirectoryUnavailable:
                    fresh = lv
                if fresh is None:
                    self._not_found += 1
                    return _VOLUME_NOT_FOUND
                if fresh.readable != lv.readable:
                    lv = fresh
                    outcome = await self._fetch(lv, ref, alt, admit=admit)
            if type(outcome) is _Found:
                return self._answer(req, ref, fmt, outcome, ref.fmt is None, expiry)
            if outcome is _UNAVAILABLE:
                # Never fall through to a lesser format: the same URL must keep its bytes.
                self._unavailable += 1
                return _REPLICAS_UNAVAILABLE
        self._not_found += 1
        return _NOT_FOUND

    async def _fetch(self, lv: VolumeInfo, ref: PhotoRef, alt: int, *, admit: bool) -> _Outcome:
        """One variant: through its cache node(s), else from the replicas directly."""
        cfg = self.config
        key = ref.key
        rotation = lv.rotation(key)
        nodes = self._ring.candidates(key, self._loop.time(), cfg.cache_attempts_max)
        if nodes:
            target = f"/c/{lv.volume_id}/{key}/{alt}/{ref.cookie:016x}"
            headers = lv.cache_headers[rotation][admit]
            for node in nodes:
                try:
                    resp = await self._client.request(
                        "GET", node.url + target, headers=headers, timeout_s=cfg.cache_timeout_s
                    )
                except HttpClientError as e:
                    self._cache_failed(node.url, str(e))
                    continue
                status = resp.status
                if status == 200:
                    hit = resp.headers.get("x-pinhole-cache") == "hit"
                    if hit:
                        self._cache_hits += 1
                    else:
                        self._cache_misses += 1
                    etag = resp.headers.get("etag") or needle_etag(key, alt, ref.cookie, resp.body)
                    return _Found(resp.body, etag, "hit" if hit else "miss")
                if status == 404:
                    return _ABSENT
                if status == 502:
                    return _UNAVAILABLE  # the cache node tried every replica
                # Overloaded (503) or broken: not this request's problem to wait out, but
                # not a reason to move all of the node's keys elsewhere either.
                self._cache_failures += 1
                log.warning("cache node %s answered HTTP %d", node.url, status)
        return await self._read_replicas(lv, rotation, ref, alt)

    def _cache_failed(self, url: str, why: str) -> None:
        self._cache_failures += 1
        down_s = self.config.cache_down_s
        log.warning("cache node %s failed (%s); skipping it for %.1f s", url, why, down_s)
        self._ring.mark_down(url, self._loop.time() + down_s)

    async def _read_replicas(
        self, lv: VolumeInfo, rotation: int, ref: PhotoRef, alt: int
    ) -> _Outcome:
        self._direct_reads += 1
        try:
            read = await read_from_replicas(
                self._client,
                lv.rotations[rotation],
                lv.volume_id,
                ref.key,
                alt,
                ref.cookie,
                headers=self._read_headers,
                timeout_s=self.config.store_timeout_s,
                tickets=True,
                batches=self._ticket_batches,
            )
        except ReplicaReadError as e:
            self._report_bad(lv, ref.key, alt, e.bad)
            if isinstance(e, NeedleAbsent):
                return _ABSENT
            assert isinstance(e, ReplicasUnavailable)
            self._direct_read_failures += 1
            log.warning("volume %d: %s", lv.volume_id, e)
            return _UNAVAILABLE
        if read.bad:
            self._report_bad(lv, ref.key, alt, read.bad)
        self._direct_reads_ticketed += read.ticketed
        return _Found(read.data, read.etag, "direct")

    # -- answers --------------------------------------------------------------------------

    def _answer(
        self,
        req: Request,
        ref: PhotoRef,
        fmt: Format,
        found: _Found,
        negotiated: bool,
        expiry: int | None,
    ) -> Response:
        # Header lines are written pre-encoded (Response.head_lines): everything here is
        # ours but the ETag, which is checked below. Same fields, same order as a list of
        # (name, value) pairs would give, without the server's per-field encoding.
        etag = found.etag
        if "\r" in etag or "\n" in etag:
            raise ValueError(f"unusable ETag {etag!r}")  # the server answers 500
        data = found.data
        if expiry is not None:
            self._signed_served += 1
            max_age = max(0, expiry - int(time.time()))
            cache_control = b"Cache-Control: private, max-age=%d\r\n" % max_age
            if fmt == Format.M3U8:
                # The stored playlist names its rungs and segments by public URL: sign them.
                data = sign_playlist(self._url_key, bytes(data), expiry=expiry)
                etag = '"{}-{}"'.format(etag.strip('"'), expiry)
        elif ref.rendition == ORIGINAL_RENDITION:
            cache_control = _ORIGINAL_CACHE_CONTROL_LINE
        else:
            cache_control = _CACHE_CONTROL_LINE
        lines = b"ETag: %s\r\n%s" % (etag.encode("latin-1"), cache_control)
        if negotiated and expiry is None:
            location = photo_path(ref.volume_id, ref.key, ref.cookie, ref.rendition, fmt)
            lines += b"Vary: Accept\r\nContent-Location: %s\r\n" % location.encode("ascii")
        elif negotiated:
            # A signed URL of one format needs a signature of its own: no Content-Location.
            lines += b"Vary: Accept\r\n"
        headers = req.headers
        inm = headers.get("if-none-match")
        if inm is not None and _etag_listed(etag, inm):
            self._not_modified += 1
            return Response(304, b"", (), None, lines)
        lines += _SERVED_LINES[found.source]
        self._served += 1
        content_type = CONTENT_TYPES[fmt]
        rng = headers.get("range")
        if rng is not None:
            if_range = headers.get("if-range")
            if if_range is None or if_range == etag:
                size = len(data)
                span = _parse_range(rng, size)
                if span is None:
                    pass  # not a single byte range we serve: the whole photo
                elif span[0] < 0:
                    lines += b"Content-Range: bytes */%d\r\n" % size
                    return Response(416, b"", (), None, lines)
                else:
                    start, end = span
                    lines += b"Content-Range: bytes %d-%d/%d\r\n" % (start, end - 1, size)
                    return Response(206, memoryview(data)[start:end], (), content_type, lines)
        return Response(200, data, (), content_type, lines)

    # -- repairs --------------------------------------------------------------------------

    def _report_bad(self, lv: VolumeInfo, key: int, alt: int, bad: list[str]) -> None:
        """Report each bad copy to the directory, in the background (best effort)."""
        for url in bad:
            node_id = lv.node_id_of(url)
            if node_id is None:
                continue  # not a replica of this lv (any more): nothing to repair there
            if len(self._repair_tasks) >= self.config.repair_reports_inflight_max:
                self._repair_reports_dropped += 1
                continue
            report = {
                "volume_id": lv.volume_id,
                "key": str(key),  # ids travel as strings: they exceed 2^53
                "alt_key": alt,
                "node_id": node_id,
                "reason": "read",
            }
            task = asyncio.create_task(self._post_repair(report))
            self._repair_tasks.add(task)
            task.add_done_callback(self._repair_tasks.discard)

    async def _post_repair(self, report: dict[str, Any]) -> None:
        url = self.config.directory_url.rstrip("/") + "/repairs"
        try:
            resp = await self._client.request(
                "POST",
                url,
                headers=(("Authorization", self._auth), ("Content-Type", "application/json")),
                body=json.dumps(report).encode(),
                timeout_s=self.config.directory_timeout_s,
            )
        except HttpClientError as e:
            log.warning("repair report %s not delivered: %s", report, e)
            return
        if 200 <= resp.status < 300:
            self._repair_reports += 1
        else:
            log.warning("repair report %s refused: HTTP %d", report, resp.status)

    async def close(self) -> None:
        """Lets repair reports in flight finish (briefly)."""
        if self._repair_tasks:
            await asyncio.wait(list(self._repair_tasks), timeout=self.config.directory_timeout_s)
        for task in list(self._repair_tasks):
            task.cancel()

    # -- statistics -----------------------------------------------------------------------

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            photos_served=self._served,
            photos_not_modified=self._not_modified,
            photos_not_found=self._not_found,
            photos_bad_url=self._bad_url,
            photos_not_acceptable=self._not_acceptable,
            photos_unavailable=self._unavailable,
            cache_hits=self._cache_hits,
            cache_misses=self._cache_misses,
            cache_failures=self._cache_failures,
            direct_reads=self._direct_reads,
            direct_read_failures=self._direct_read_failures,
            direct_reads_ticketed=self._direct_reads_ticketed,
            lookup_refreshes=self._lookup_refreshes,
            repair_reports=self._repair_reports,
            repair_reports_dropped=self._repair_reports_dropped,
            signed_served=self._signed_served,
            signed_refused=self._signed_refused,
        )

    def status(self) -> dict[str, Any]:
        ring = self._ring
        doc: dict[str, Any] = {
            "router": asdict(self.statistics()),
            "lookup": asdict(self.directory.statistics()),
            "caches": [
                {"node_id": n.node_id, "url": n.url}
                for n in ring.nodes  # the directory's alive caches
            ],
            "caches_down": ring.down(self._loop.time()),
            "directory_url": self.config.directory_url,
        }
        if self.server is not None:
            doc["http"] = asdict(self.server.statistics())
        return doc


def _etag_listed(etag: str, header: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/"x" matches "x"."""
    if header == etag or header.strip() == "*":
        return True
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single byte range; None to ignore the header (not bytes, several
    ranges, malformed: the whole photo is sent); (-1, -1) when unsatisfiable (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not _digits_or_empty(first) or not _digits_or_empty(last):
        return None
    if first == "":
        if last == "":
            return None
        suffix = _position(last)
        if suffix == 0:
            return -1, -1
        return max(0, size - suffix), size
    start = _position(first)
    if last:
        end = _position(last) + 1
        if end <= start:
            return None  # last < first: syntactically invalid, ignored (RFC 9110 14.1.1)
    else:
        end = size
    if start >= size:
        return -1, -1
    return start, min(end, size)


def _digits_or_empty(text: str) -> bool:
    return text == "" or (text.isascii() and text.isdigit())


# More digits than this pass any photo's size; they are never converted (int() of thousands
# of digits is slow, and past 4300 a ValueError).
_POSITION_DIGITS_MAX: Final = 19


def _position(digits: str) -> int:
    """A byte position of a Range; a longer number than _POSITION_DIGITS_MAX is taken as
    2^63, past the end of any photo (the range is then clamped or unsatisfiable)."""
    return int(digits) if len(digits) <= _POSITION_DIGITS_MAX else 2**63
