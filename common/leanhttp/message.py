"""Request/response value types and limits for the lean HTTP/1.1 server.

These types sit on the hot path of the store node's data plane, so they are deliberately
plain: ``Request`` is a ``__slots__`` class filled in by the protocol, ``Response`` is a
slotted dataclass the handler builds. Neither validates its input beyond what framing
needs; the protocol in :mod:`common.leanhttp.server` does that once, when it writes.

The bottom of this module holds the response wire format (pre-encoded status lines, the
Date line, header encoding) so that ``server.py`` is only the connection state machine.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qsl

__all__ = [
    "Handler",
    "HeadHook",
    "HttpLimits",
    "Request",
    "Response",
    "encode_header_lines",
    "error_response",
    "json_response",
]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-server protocol limits. Sizes are bytes, durations seconds, rates bytes/second.

    header_bytes_max: request line + header fields; exceeding it -> 431 and close.
    body_bytes_max: default per-request body cap (see ``LeanHTTPServer(body_limit=...)``) -> 413.
    keepalive_idle_s_max: a connection with no request in progress and nothing to answer is
        closed after this much silence.
    request_head_s_max: a request head that has started must complete within this time
        (slowloris guard) -> 408 and close. The same bound applies to any silence while a
        request body is still arriving.
    body_rate_bytes_per_s_min, body_rate_grace_s: once a body has been arriving for the
        grace time (counted from its head's completion), its average rate since then must
        stay at or above the minimum, else 408 (code ``body_too_slow``) and close. Checked
        by the connection's timer, so a slow body is noticed within about one timer period
        (the smallest of the durations here) of falling below the rate. Time the server
        itself does not read (back-pressure) or owes a 100 Continue does not count.
    connections_max: open connections beyond this are closed as soon as they are accepted.
    connections_per_address_max: open connections from one peer IP address (loopback
        included); a connection over it is closed as soon as it is accepted. The default
        leaves room for a cache's store pool (256 by default) and the writers of the same
        host.
    pipeline_depth_max: parsed-but-unanswered requests per connection; at this depth the
        server stops reading the socket until the queue drains. Requests already inside one
        received packet are still parsed, so the queue can overshoot by one read's worth.
    pipeline_bytes_max: body bytes of requests received while an earlier request on the
        connection is still being answered (queued bodies plus the one arriving). A
        pipelined body that would take the total over it (or a chunked one, whose size is
        unknown) is not read until the earlier answers are written; the overshoot is at
        most one read's worth.
    write_buffer_bytes_high: transport write-buffer high-water mark; above it the server
        stops reading (and dispatching) until the peer has drained the buffer. A peer that
        does not read thus holds at most this buffer plus the one response being written.
    write_stall_s_max: a connection whose write buffer stays above the high-water mark
        (the peer does not drain it to the low-water mark) for this long is aborted; so is a
        closing connection whose buffered answer is not flushed within this long.
    close_linger_s_max: after an error response that closes the connection (400/408/413/431
        or a head-hook rejection) the server half-closes and discards input for at most this
        long, so the peer's unread body does not turn the close into a reset that destroys
        the response in flight.
    """

    header_bytes_max: int = 16 * 1024
    body_bytes_max: int = 64 * 1024 * 1024
    keepalive_idle_s_max: float = 75.0
    request_head_s_max: float = 15.0
    body_rate_bytes_per_s_min: int = 32 * 1024
    body_rate_grace_s: float = 5.0
    connections_max: int = 10_000
    connections_per_address_max: int = 1024
    pipeline_depth_max: int = 64
    pipeline_bytes_max: int = 4 * 1024 * 1024
    write_buffer_bytes_high: int = 4 * 1024 * 1024
    write_stall_s_max: float = 30.0
    close_linger_s_max: float = 2.0

    def __post_init__(self) -> None:
        for name in (
            "header_bytes_max",
            "body_bytes_max",
            "body_rate_bytes_per_s_min",
            "connections_max",
            "connections_per_address_max",
            "pipeline_depth_max",
            "pipeline_bytes_max",
            "write_buffer_bytes_high",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"HttpLimits.{name} must be >= 1")
        for name in (
            "keepalive_idle_s_max",
            "request_head_s_max",
            "body_rate_grace_s",
            "write_stall_s_max",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpLimits.{name} must be > 0")
        if self.close_linger_s_max < 0:
            raise ValueError("HttpLimits.close_linger_s_max must be >= 0")


class Request:
    """One parsed HTTP request.

    Attributes are plain slots set by the protocol:

    method: upper-case method name, e.g. "GET".
    path: raw request path without the query string; not percent-decoded. Bytes outside
        ASCII are decoded as latin-1 so the original octets can be recovered with
        ``path.encode("latin-1")``. "*" for ``OPTIONS *``.
    query: raw query string without the "?" ("" if none).
    headers: field names lower-cased; repeated fields joined with ", ".
    body: the complete body (chunked bodies arrive decoded); b"" when there is none. It is
        b"" while a head hook or body-limit callback looks at the request. A body that
        arrived in several reads is the bytearray it was assembled in (not copied again).
    keep_alive: whether the client allows the connection to be reused after this request.
    http_version: "1.1" or "1.0".
    remote: peer address as "ip:port" ("[ip]:port" for IPv6), None if unknown.
    """

    __slots__ = (
        "_params",
        "body",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "remote",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        http_version: str,
        keep_alive: bool,
        remote: str | None,
        body: bytes | bytearray = b"",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http_version = http_version
        self.remote = remote
        self._params: dict[str, str] | None = None

    def query_params(self) -> dict[str, str]:
        """Query string parsed as by ``urllib.parse.parse_qsl`` (percent-decoded, blank
        values kept, the last of repeated keys wins; `parse_query`). Parsed on first call
        and cached."""
        params = self._params
        if params is None:
            params = self._params = parse_query(self.query)
        return params

    def __repr__(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"<Request {self.method} {self.path}{query} HTTP/{self.http_version}>"


def parse_query(query: str) -> dict[str, str]:
    """``dict(parse_qsl(query, keep_blank_values=True))``. A query with nothing to decode
    (no '%', no '+': the internal hops' signed URLs) is split here, which costs a third of
    what parse_qsl's general path does; the answer is the same."""
    if "%" in query or "+" in query:
        return dict(parse_qsl(query, keep_blank_values=True))
    params: dict[str, str] = {}
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            params[name] = value
    return params


@dataclass(slots=True)
class Response:
    """What a handler returns.

    status: HTTP status code (100..999; unknown codes are sent with an empty reason).
    body: sent as is (a memoryview is written without copying where the loop allows it).
        Ignored for HEAD requests and for 1xx/204/304 responses.
    headers: extra header fields (name, value). The server adds Date, Content-Length and
        Connection itself: a handler "connection: close" makes the server close after this
        response; a handler "content-length" is honoured only for HEAD responses (to report
        the size of the body a GET would send) and dropped otherwise. Names and values must
        not contain CR or LF (the response becomes a 500 if they do).
    content_type: sent as Content-Type when not None.
    head_lines: header lines already encoded (``b"Name: value\r\n"`` each), written as
        they are after ``headers``. For hot paths that answer with the same fields again
        and again (a cache hit's ETag line lives with the cached item): the server does no
        per-request encoding or checking of them, so build them with
        ``encode_header_lines``, which checks them once.
    """

    status: int
    body: bytes | bytearray | memoryview = b""
    headers: Sequence[tuple[str, str]] = ()
    content_type: str | None = None
    head_lines: bytes = b""


Handler = Callable[[Request], Response | Awaitable[Response]]
"""Returns a Response (written at once, no Task) or an awaitable resolving to one."""

HeadHook = Callable[[Request], Response | None]
"""Called once the request head is complete and before any body byte is accepted.
Returning a Response rejects the request: it is sent with "Connection: close" and the
connection is closed after it (the unread body is discarded)."""

_JSON_TYPE = "application/json"


def json_response(
    status: int, payload: object, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    """A Response whose body is ``payload`` as compact UTF-8 JSON."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, headers, _JSON_TYPE)


def error_response(status: int, code: str, message: str) -> Response:
    """The project's error shape: ``{"error": {"code": code, "message": message}}``."""
    return json_response(status, {"error": {"code": code, "message": message}})


def guarded(route: Handler, error_for: Callable[[BaseException], Response]) -> Handler:
    """A service's error middleware: `route`'s answer, or `error_for` of whatever it raised,
    before its first await or after. A synchronous answer stays synchronous (no Task)."""

    async def later(answer: Awaitable[Response]) -> Response:
        try:
            return await answer
        except Exception as e:
            return error_for(e)

    def handle(req: Request) -> Response | Awaitable[Response]:
        try:
            answer = route(req)
        except Exception as e:
            return error_for(e)
        if isinstance(answer, Response):
            return answer
        return later(answer)

    return handle


# --------------------------------------------------------------------------- wire format
# Used by the protocol in server.py; kept here so that module is only the state machine.

Body = bytes | bytearray | memoryview

# A service's answer to a whole request it recognised in the raw bytes before the parser
# saw them: (status, head, body or None, bytes to write, close after it), as
# encode_response frames it. See LeanHTTPServer's `fast`.
FastAnswer = tuple[int, bytes, Body | None, int, bool]
# (the bytes one read brought, the server's Date line) -> the answer, or None: parse as usual.
FastPath = Callable[[bytes, bytes], FastAnswer | None]

_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CT_LINES: dict[str, bytes] = {}  # content type -> encoded header line (bounded cache)
_CT_LINES_MAX = 256


def date_line() -> bytes:
    """The current ``Date`` header line (RFC 9110 IMF-fixdate), CRLF included."""
    return b"Date: %s\r\n" % formatdate(usegmt=True).encode("ascii")


def _status_line(status: int) -> bytes:
    if not isinstance(status, int) or not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status!r}")
    line = _STATUS_LINES.get(status)
    if line is None:  # unregistered code: the reason phrase may be empty (RFC 9112 4)
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d \r\n" % status
    return line


def _content_type_line(content_type: str) -> bytes:
    line = _CT_LINES.get(content_type)
    if line is None:
        if "\r" in content_type or "\n" in content_type:
            raise ValueError("CR/LF in content type")
        line = b"Content-Type: %s\r\n" % content_type.encode("latin-1")
        if len(_CT_LINES) < _CT_LINES_MAX:
            _CT_LINES[content_type] = line
    return line


# Request header names as clients usually spell them -> lower-cased str (saves two
# allocations per field; anything else goes through lower().decode()).
_COMMON_REQUEST_HEADERS = (
    "Host",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Authorization",
    "Connection",
    "Content-Length",
    "Content-Type",
    "Cookie",
    "Expect",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "Range",
    "Referer",
    "Transfer-Encoding",
    "Via",
    "X-Forwarded-For",
    "X-Request-Id",
    # pinhole's own hops (router -> cache) on every request of the photo path
    "X-Pinhole-Replicas",
    "X-Pinhole-Admit",
)
HEADER_NAMES: dict[bytes, str] = {
    spelling.encode("ascii"): name.lower()
    for name in _COMMON_REQUEST_HEADERS
    for spelling in (name, name.lower())
}

# Lengths of "connection" and "content-length": only fields of these lengths need lower().
_FRAMING_NAME_LENGTHS = frozenset((10, 14))


def _encode_fields(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str | None, bool]:
    """Encode a handler's extra header fields.

    Returns (encoded lines, the handler's content-length value or None, whether the handler
    asked for "connection: close"). Content-Length and Connection are taken out because the
    server writes its own. Raises ValueError on CR/LF (response splitting) or a bad length.
    """
    text = ""
    lines = 0
    length: str | None = None
    close = False
    for name, value in fields:
        if len(name) in _FRAMING_NAME_LENGTHS:
            lname = name.lower()
            if lname == "content-length":
                if not value.isdigit():
                    raise ValueError(f"invalid content-length {value!r}")
                length = value
                continue
            if lname == "connection":
                close = close or "close" in value.lower()
                continue
        text += f"{name}: {value}\r\n"  # CPython appends in place: no quadratic copying
        lines += 1
    # One scan per character instead of a check per field: every line has exactly one CR
    # and one LF unless a name or value smuggles its own.
    if text.count("\n") != lines or text.count("\r") != lines:
        raise ValueError("CR/LF in a header field")
    return text.encode("latin-1"), length, close


def encode_header_lines(fields: Sequence[tuple[str, str]]) -> bytes:
    """``fields`` as ``Response.head_lines``. Raises ValueError on CR/LF in a name or value
    and on Content-Length or Connection (the server writes those itself)."""
    lines, length, close = _encode_fields(fields)
    if length is not None or close:
        raise ValueError("Content-Length and Connection are the server's to write")
    return lines


def encode_response(
    resp: Response, head_request: bool, close: bool, date: bytes
) -> tuple[bytes, Body | None, int, bool]:
    """Frame a response; ``date`` is the cached output of ``date_line()``.

    Returns (head, body to write or None, total bytes to write, close after it). Raises
    ValueError/TypeError when the Response cannot be framed correctly.
    """
    status = resp.status
    status_line = _STATUS_LINES.get(status) or _status_line(status)
    ct = resp.content_type
    ct_line = b"" if ct is None else _content_type_line(ct)
    length: str | None = None
    if resp.headers:
        extra, length, asked_close = _encode_fields(resp.headers)
        close = close or asked_close
        if resp.head_lines:
            extra += resp.head_lines
    else:
        extra = resp.head_lines
    connection = b"close" if close else b"keep-alive"
    if status < 200 or status == 204 or status == 304:  # never a body nor a length
        head = b"%s%s%s%sConnection: %s\r\n\r\n" % (
            status_line,
            date,
            ct_line,
            extra,
            connection,
        )
        return head, None, len(head), close
    body = resp.body
    size = body.nbytes if type(body) is memoryview else len(body)
    if head_request:
        # HEAD reports the length a GET would get; the handler may state it explicitly.
        head = b"%s%s%s%sContent-Length: %s\r\nConnection: %s\r\n\r\n" % (
            status_line,
            date,
            ct_line,
            extra,
            (length or str(size)).encode("ascii"),
            connection,
        )
        return head, None, len(head), close
    head = b"%s%s%s%sContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
        status_line,
        date,
        ct_line,
        extra,
        size,
        connection,
    )
    return head, (body if size else None), len(head) + size, close
