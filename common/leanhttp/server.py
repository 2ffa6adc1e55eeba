"""A lean HTTP/1.1 server: one ``asyncio.Protocol`` per connection driving httptools (llhttp).

Why not aiohttp: on the store node's data path aiohttp costs ~80-98 us of server CPU per
request, a raw protocol ~17-29 us. This layer keeps the hot path close to the raw figure:

* A handler that returns a ``Response`` is answered inside ``data_received`` (no Task, no
  Future). Only a handler that returns an awaitable gets one Task.
* Requests are answered strictly in order. A connection runs at most one handler at a time;
  requests parsed while a handler is pending wait in a per-connection deque (pipelining).
* Response heads are built with one ``bytes %`` format from pre-encoded status lines and a
  Date line the server refreshes once per second; the body is passed to ``writelines``
  uncopied (uvloop writes it with writev; the default 3.11 loop joins it).
* Timeouts use one ``TimerHandle`` per connection that is re-armed lazily: requests only
  store a timestamp, the timer checks the phase when it fires.

* Slow and greedy peers are bounded by the same timer and by rarely-taken branches: a
  body arriving below a minimum average rate, more connections from one address than
  allowed, a peer that does not read its answers, pipelined bodies piling up behind a
  pending handler (see ``HttpLimits``).

Status codes this layer produces itself: 400 (malformed request, unsupported upgrade),
408 (request head or body stalled, body too slow), 413 (body over the limit), 431 (head
over the limit), 500 (handler exception or invalid handler response). All are JSON error
bodies and all but 500 close the connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, NoReturn, cast

import httptools

from .message import (
    CONTINUE,
    HEADER_NAMES,
    FastAnswer,
    FastPath,
    Handler,
    HeadHook,
    HttpLimits,
    Request,
    Response,
    date_line,
    encode_response,
    error_response,
)

__all__ = ["BodyLimit", "LeanHTTPServer", "ServerStatistics"]

logger = logging.getLogger("leanhttp")

BodyLimit = Callable[[Request], int]

# Parser phase of the message currently being received on a connection.
_IDLE = 0  # between messages
_HEAD = 1  # request line / header fields arriving
_BODY = 2  # head complete, body arriving


_INTERNAL_ERROR = error_response(500, "internal", "internal server error")

# Why a connection was closed as soon as it was accepted (ServerStatistics).
REFUSED_SHUTDOWN = "shutdown"
REFUSED_CONNECTIONS_MAX = "connections_max"
REFUSED_PER_ADDRESS = "connections_per_address_max"
_REFUSAL_REASONS = (REFUSED_SHUTDOWN, REFUSED_CONNECTIONS_MAX, REFUSED_PER_ADDRESS)

# A parser with no callbacks, swapped in when a connection ends so the protocol and its
# parser (which holds bound methods of the protocol) do not form a reference cycle.
_NULL_PARSER = httptools.HttpRequestParser(object())


class _StopParsing(Exception):
    """Raised from a parser callback to make llhttp stop at once (the connection is done)."""


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """Counters since ``start``. Bytes are raw socket payload (heads included).

    connections_total counts accepted connections; refused ones (over ``connections_max``,
    over ``connections_per_address_max``, or during shutdown) only count in
    connections_refused, and by reason in connections_refused_by_reason ("shutdown",
    "connections_max", "connections_per_address_max", always present).
    addresses_connected is the number of distinct peer addresses with an open connection.
    connections_reading_paused is the number of open connections whose socket is not read
    now: back-pressure (a full write buffer, a full pipeline queue, held pipelined bodies)
    or a last request still being answered.
    requests_total counts completely received requests; responses_by_class counts every
    final response written, including the ones this layer produces for requests it rejects
    ("2xx".."5xx" always present). handler_errors counts 500s produced because a handler
    (or a head hook / body-limit callback) raised or returned something that is not a valid
    Response.
    """

    connections_open: int
    connections_total: int
    connections_refused: int
    connections_refused_by_reason: dict[str, int]
    addresses_connected: int
    connections_reading_paused: int
    requests_total: int
    responses_by_class: dict[str, int]
    bytes_in: int
    bytes_out: int
    handler_errors: int
    requests_fast: int = 0


def _split_target(target: bytes) -> tuple[str, str]:
    """Path and query of a request target that is not in origin form ("/...")."""
    if target == b"*":
        return "*", ""
    url = httptools.parse_url(target)  # absolute form; raises HttpParserInvalidURLError
    return (url.path or b"/").decode("latin-1"), (url.query or b"").decode("latin-1")


def _format_peer(peer: object) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer) if peer else None


class _HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Also the httptools callback target (``on_*`` methods).

    Life of a request: on_message_begin -> on_url/on_header -> on_headers_complete (head
    hook, body limit, 100-continue) -> on_body* -> on_message_complete (dispatch or queue).
    ``_parse_dead`` means no further request will be read on this connection: the
    connection closes once the outstanding answers (and a pending ``_terminal`` error
    response, if any) are written.
    """

    __slots__ = (
        "_address",
        "_body_buf",
        "_body_expected",
        "_body_first",
        "_body_held",
        "_body_len",
        "_body_limit",
        "_body_max",
        "_body_started",
        "_closing",
        "_continue_owed",
        "_draining",
        "_fast",
        "_handler",
        "_head_base",
        "_head_carry",
        "_head_hook",
        "_head_started",
        "_head_total",
        "_header_bytes_max",
        "_headers",
        "_inflight",
        "_inflight_req",
        "_last_activity",
        "_limits",
        "_linger_handle",
        "_lingering",
        "_loop",
        "_parse_dead",
        "_parser",
        "_paused_at",
        "_reading_paused",
        "_remote",
        "_req",
        "_srv",
        "_state",
        "_terminal",
        "_terminal_is_head",
        "_timer",
        "_transport",
        "_url",
        "_waiting",
        "_waiting_bytes",
        "_write_paused",
        "_write_stalled_at",
    )

    def __init__(self, server: LeanHTTPServer, loop: asyncio.AbstractEventLoop) -> None:
        self._srv = server
        self._loop = loop
        self._limits = server.limits
        self._header_bytes_max = server.limits.header_bytes_max
        self._handler = server._handler
        self._fast = server._fast
        self._head_hook = server._head_hook
        self._body_limit = server._body_limit
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._address: str | None = None  # peer IP, the key of the per-address count
        # Message being parsed.
        self._state = _IDLE
        self._url = b""
        self._headers: dict[str, str] = {}
        self._req: Request | None = None
        # Head size accounting. _head_total only grows (per connection): message starts
        # count 1, URL pieces and completed header fields their size. The current head's
        # size is _head_total - _head_base, plus _head_carry: bytes of a header field that
        # httptools is still buffering, invisible to us until it completes.
        self._head_total = 0
        self._head_base = 0
        self._head_carry = 0
        self._head_started = 0.0
        self._body_first = b""  # first body chunk; often the whole body, then never copied
        self._body_buf: bytearray | None = None
        self._body_len = 0
        self._body_expected = 0  # Content-Length, or -1 for a chunked body
        self._body_max = 0
        # Loop time the body's rate is measured from (head complete; moved on by the time
        # the server did not read or owed a 100 Continue).
        self._body_started = 0.0
        # The arriving body is pipelined behind answers still due and over
        # pipeline_bytes_max: the socket is not read until they are written.
        self._body_held = False
        self._continue_owed = False
        # Answering.
        self._waiting: deque[Request] = deque()
        self._waiting_bytes = 0  # body bytes of the requests in _waiting
        self._inflight: asyncio.Future[Response] | None = None
        self._inflight_req: Request | None = None
        self._terminal: Response | None = None
        self._terminal_is_head = False
        self._parse_dead = False
        self._draining = False
        self._closing = False
        self._lingering = False
        # Ends a lingering close, or aborts a close whose buffered answer is not taken.
        self._linger_handle: asyncio.TimerHandle | None = None
        # Flow control and timers.
        self._write_paused = False
        self._write_stalled_at = 0.0  # loop time the transport last paused our writing
        self._reading_paused = False
        self._paused_at = 0.0  # loop time reading was last paused
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        srv = self._srv
        tr = cast(asyncio.Transport, transport)
        peer = tr.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        per_address = srv._per_address
        refusal = None
        if srv._closing:
            refusal = REFUSED_SHUTDOWN
        elif len(srv._conns) >= self._limits.connections_max:
            refusal = REFUSED_CONNECTIONS_MAX
        elif (
            address is not None
            and per_address.get(address, 0) >= self._limits.connections_per_address_max
        ):
            refusal = REFUSED_PER_ADDRESS
        if refusal is not None:
            srv._connections_refused[refusal] += 1
            self._closing = self._parse_dead = True
            self._parser = _NULL_PARSER
            tr.close()
            return
        self._transport = tr
        srv._conns.add(self)
        srv._connections_total += 1
        if address is not None:
            self._address = address
            per_address[address] = per_address.get(address, 0) + 1
        self._remote = _format_peer(peer)
        tr.set_write_buffer_limits(high=self._limits.write_buffer_bytes_high)
        now = self._last_activity = self._loop.time()
        self._timer = self._loop.call_at(now + srv._timer_period, self._on_timer)

    def data_received(self, data: bytes) -> None:
        self._srv._bytes_in += len(data)
        if self._parse_dead:  # closing, lingering, or only a final answer is left to send
            return
        self._last_activity = self._loop.time()
        if (
            self._fast is not None
            and self._state == _IDLE
            and self._inflight is None
            and not self._waiting
            and not self._write_paused
            and not self._draining
        ):
            # Between messages with nothing owed: the service may answer the whole read
            # itself (the parser never sees it). It declines anything but its plainest
            # requests, which llhttp and the handler then take as usual.
            try:
                answer = self._fast(data, self._srv._date_line)
            except Exception:
                logger.exception("%s: fast path failed; parsing as usual", self._srv.name)
                answer = None
            if answer is not None:
                self._write_fast(answer)
                return
        head_total = self._head_total
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(error_response(400, "bad_request", "protocol upgrade is not supported"))
            return
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
            return
        if self._state == _HEAD:
            if self._head_total == head_total:
                # No head callback ran: the whole packet went into one header field that
                # httptools buffers. Count it, so an endless field cannot grow unbounded.
                carry = self._head_carry = self._head_carry + len(data)
                if head_total - self._head_base + carry > self._header_bytes_max:
                    self._fail(_header_too_large())
            else:
                # A callback ran, so any field carried so far has completed and on_header
                # counted it exactly.
                self._head_carry = 0

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        if self._parse_dead:  # our own _StopParsing from a callback: already handled
            return
        cause = exc.__context__  # what a callback raised, if one did
        if cause is None or isinstance(cause, httptools.HttpParserError):
            self._fail(error_response(400, "bad_request", str(exc) or "malformed request"))
        else:  # a bug in this module, not the client's fault
            logger.error("%s: request parsing failed", self._srv.name, exc_info=cause)
            self._fail(_INTERNAL_ERROR)

    def eof_received(self) -> bool:
        if self._lingering or self._closing:
            return False
        if self._state == _IDLE and (self._inflight is not None or self._waiting):
            # Half-closed by the client after its last request: answer, then close.
            self._parse_dead = True
            self._update_reading()
            return True
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = self._parse_dead = True
        self._transport = None
        self._parser = _NULL_PARSER
        self._waiting.clear()
        self._waiting_bytes = 0
        self._req = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        srv = self._srv
        if self in srv._conns:
            srv._conns.discard(self)
            address = self._address
            if address is not None:
                left = srv._per_address[address] - 1
                if left:
                    srv._per_address[address] = left
                else:
                    del srv._per_address[address]  # the dict holds connected addresses only
            srv._maybe_drained()
        # An in-flight handler is left to finish (a store write should not be torn in
        # half by a disconnect); its answer is dropped. LeanHTTPServer.close cancels it.

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_stalled_at = self._loop.time()
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._last_activity = self._loop.time()
        self._pump()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._state = _HEAD
        self._head_started = self._last_activity
        self._head_base = self._head_total = self._head_total + 1
        self._head_carry = 0
        self._headers = {}

    def on_url(self, url: bytes) -> None:
        self._url += url  # usually one call; b"" + x does not copy
        total = self._head_total = self._head_total + len(url)
        if total - self._head_base > self._header_bytes_max:
            self._stop(_header_too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        total = self._head_total = self._head_total + len(name) + len(value) + 4
        if total - self._head_base > self._header_bytes_max:
            self._stop(_header_too_large())
        if self._state == _BODY:
            # A chunked trailer: counted against the limit but dropped, so nothing can
            # change the headers the head hook already judged.
            return
        key = HEADER_NAMES.get(name) or name.lower().decode("latin-1")
        val = value.rstrip().decode("latin-1")  # llhttp strips leading but not trailing OWS
        prev = self._headers.setdefault(key, val)
        if prev is not val:
            self._headers[key] = f"{prev}, {val}"

    def on_headers_complete(self) -> None:
        parser = self._parser
        url = self._url
        self._url = b""
        if url[:1] == b"/":  # origin form, the common case
            q = url.find(b"?")
            if q < 0:
                path, query = url.decode("latin-1"), ""
            else:
                path, query = url[:q].decode("latin-1"), url[q + 1 :].decode("latin-1")
        else:
            path, query = _split_target(url)
        headers = self._headers
        req = Request(
            parser.get_method().decode("ascii"),
            path,
            query,
            headers,
            parser.get_http_version(),
            parser.should_keep_alive() and not self._draining,
            self._remote,
        )
        self._req = req
        self._state = _BODY
        if parser.should_upgrade():
            self._stop(error_response(400, "bad_request", "protocol upgrade is not supported"))

        hook = self._head_hook
        if hook is not None:
            try:
                rejection = hook(req)
            except Exception as exc:
                rejection = self._callback_failed(req, exc)
            if rejection is not None:
                self._stop(rejection, req.method == "HEAD")

        # llhttp has validated the framing: a single numeric Content-Length, or a
        # Transfer-Encoding ending in chunked, never both.
        length = headers.get("content-length")
        if length is not None:
            expected = int(length)
        else:
            expected = -1 if "transfer-encoding" in headers else 0
        if expected:  # a body follows (chunked or Content-Length > 0)
            # _body_len/_body_first/_body_buf are already reset (see on_message_complete).
            self._body_expected = expected
            srv = self._srv
            try:
                limit = self._body_limit(req) if self._body_limit else self._limits.body_bytes_max
            except Exception as exc:
                self._stop(self._callback_failed(req, exc))
            if expected > limit:
                self._stop(_payload_too_large(limit))
            self._body_max = limit
            self._body_started = self._last_activity
            # Pipelined behind answers still due, a body may not pile up on top of the
            # queued ones (a chunked body's size is unknown until it ends).
            if (self._inflight is not None or self._waiting) and (
                expected < 0 or self._waiting_bytes + expected > self._limits.pipeline_bytes_max
            ):
                self._body_held = True
                self._update_reading()
            if req.http_version == "1.1" and headers.get("expect", "").lower() == "100-continue":
                if self._inflight is None and not self._waiting and self._transport:
                    self._transport.write(CONTINUE)
                    srv._bytes_out += len(CONTINUE)
                else:  # an earlier answer is still due; a 100 now would be taken as its
                    self._continue_owed = True

    def on_body(self, chunk: bytes) -> None:
        end = self._body_len + len(chunk)
        if end > self._body_max:  # only a chunked body can get here
            self._stop(_payload_too_large(self._body_max))
        buf = self._body_buf
        if buf is None:
            if not self._body_len:
                self._body_first = chunk
                self._body_len = end
                return
            # Second chunk: move to one buffer, pre-sized when the length is known.
            first = self._body_first
            self._body_first = b""
            if self._body_expected > 0:
                buf = bytearray(self._body_expected)
                buf[: len(first)] = first
            else:
                buf = bytearray(first)
            self._body_buf = buf
        if self._body_expected > 0:
            buf[self._body_len : end] = chunk  # same-size slice: no reallocation
        else:
            buf += chunk
        self._body_len = end

    def on_message_complete(self) -> None:
        req = self._req
        if req is None:  # cannot happen: headers always complete first
            return
        self._req = None
        self._state = _IDLE
        self._continue_owed = False
        if self._body_len:
            buf = self._body_buf
            # The assembled bytearray is handed over as it is (no copy): the protocol lets go
            # of it here and never touches it again.
            req.body = self._body_first if buf is None else buf
            self._body_len = 0
            self._body_first = b""
            self._body_buf = None
        self._srv._requests_total += 1
        if not req.keep_alive or self._draining:
            self._parse_dead = True
        if self._inflight is None and not self._waiting and not self._write_paused:
            self._dispatch(req)
        else:
            self._waiting.append(req)
            self._waiting_bytes += len(req.body)
            if len(self._waiting) >= self._limits.pipeline_depth_max:
                self._update_reading()
        if self._parse_dead:
            raise _StopParsing  # e.g. "Connection: close": bytes after it must not be parsed

    # ------------------------------------------------------------------ answering

    def _dispatch(self, req: Request) -> None:
        try:
            result = self._handler(req)
        except Exception as exc:
            self._write(req, self._callback_failed(req, exc))
            return
        if isinstance(result, Response):
            self._write(req, result)
            return
        try:
            # A coroutine (the usual awaitable) goes straight to the loop's C task factory;
            # asyncio.ensure_future's checks in Python cost more than the Task itself.
            if type(result) is CoroutineType:
                fut = self._loop.create_task(cast(Coroutine[Any, Any, Response], result))
            else:
                fut = asyncio.ensure_future(result, loop=self._loop)
        except TypeError as exc:
            self._write(req, self._callback_failed(req, exc))
            return
        self._inflight = fut
        self._inflight_req = req
        self._srv._tasks.add(fut)
        fut.add_done_callback(self._on_handler_done)

    def _on_handler_done(self, fut: asyncio.Future[Response]) -> None:
        srv = self._srv
        srv._tasks.discard(fut)
        req = self._inflight_req
        self._inflight = self._inflight_req = None
        if req is None:
            return
        resp: Response
        if fut.cancelled():
            resp = _INTERNAL_ERROR
            self._parse_dead = True  # cancelled by a shutdown; this is the last answer
        elif (exc := fut.exception()) is not None:
            resp = self._callback_failed(req, exc)
        else:
            result: object = fut.result()  # the handler's type hints are not a guarantee
            if isinstance(result, Response):
                resp = result
            else:
                resp = self._callback_failed(req, TypeError(f"handler returned {result!r}"))
        srv._maybe_drained()
        if self._closing:
            return
        self._last_activity = self._loop.time()
        self._write(req, resp)
        self._pump()

    def _callback_failed(self, req: Request, exc: BaseException) -> Response:
        srv = self._srv
        srv._handler_errors += 1
        logger.error("%s: handler failed on %s %s", srv.name, req.method, req.path, exc_info=exc)
        return _INTERNAL_ERROR

    def _write(self, req: Request, resp: Response) -> None:
        """Write one answer; closes the connection after it when it is the last."""
        transport = self._transport
        if transport is None or self._closing:
            return
        srv = self._srv
        close = not req.keep_alive or (
            self._parse_dead and not self._waiting and self._terminal is None
        )
        try:
            head, body, size, close = encode_response(
                resp, req.method == "HEAD", close, srv._date_line
            )
        except (ValueError, TypeError) as exc:
            resp = self._callback_failed(req, exc)
            head, body, size, close = encode_response(resp, False, close, srv._date_line)
        if body is None:
            transport.write(head)
        else:
            transport.writelines([head, body])  # the body is not copied (uvloop: writev)
        srv._bytes_out += size
        srv._responses[resp.status // 100] += 1
        if close:
            self._parse_dead = True
            self._close()

    def _write_fast(self, answer: FastAnswer) -> None:
        """Write the fast path's answer to a whole request; closes after it when asked."""
        status, head, body, size, close = answer
        transport = self._transport
        if transport is None or self._closing:
            return
        if body is None:
            transport.write(head)
        else:
            transport.writelines([head, body])  # the body is not copied (uvloop: writev)
        srv = self._srv
        srv._requests_total += 1
        srv._requests_fast += 1
        srv._bytes_out += size
        srv._responses[status // 100] += 1
        if close:
            self._parse_dead = True
            self._close()

    def _pump(self) -> None:
        """Answer queued requests while possible; then finish or re-open the connection."""
        if self._lingering:
            return
        waiting = self._waiting
        while waiting and self._inflight is None and not self._write_paused and not self._closing:
            req = waiting.popleft()
            self._waiting_bytes -= len(req.body)
            self._dispatch(req)
        if self._closing:  # also when a handler asked for "connection: close"
            return
        if self._inflight is None and not waiting:
            if self._terminal is not None:
                self._send_terminal()
                return
            if self._parse_dead and self._state != _BODY:
                self._close()
                return
            if self._continue_owed and self._transport is not None:
                self._continue_owed = False
                self._transport.write(CONTINUE)
                self._srv._bytes_out += len(CONTINUE)
                self._body_started = self._loop.time()  # the peer waited for this to send
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        pause = (
            self._write_paused
            or (self._body_held and (self._inflight is not None or bool(self._waiting)))
            or len(self._waiting) >= self._limits.pipeline_depth_max
            or (self._parse_dead and not self._lingering and self._state != _BODY)
        )
        if pause == self._reading_paused:
            return
        self._reading_paused = pause
        now = self._loop.time()
        if pause:
            self._paused_at = now
            transport.pause_reading()
        else:
            # The peer could not send while we were not reading: restart its clocks, and
            # leave the pause out of its body's rate.
            self._last_activity = self._head_started = now
            self._body_started += now - self._paused_at
            self._body_held = False
            transport.resume_reading()

    # ------------------------------------------------------------------ ending

    def _stop(self, resp: Response, head_request: bool = False) -> NoReturn:
        """From a parser callback: answer ``resp`` as the last response and stop parsing."""
        self._fail(resp, head_request)
        raise _StopParsing

    def _fail(self, resp: Response, head_request: bool = False) -> None:
        """Make ``resp`` the final answer on this connection (after any outstanding ones)."""
        if self._closing or self._lingering or self._terminal is not None:
            return
        self._parse_dead = True
        self._state = _IDLE
        self._req = None
        self._continue_owed = False
        # A body cut short is never handed to a handler: let go of what arrived of it.
        self._body_first = b""
        self._body_buf = None
        self._body_len = 0
        self._terminal = resp
        self._terminal_is_head = head_request
        if self._inflight is None and not self._waiting:
            self._send_terminal()
        else:
            self._update_reading()

    def _send_terminal(self) -> None:
        transport = self._transport
        resp = self._terminal
        if transport is None or resp is None or self._closing:
            return
        self._terminal = None
        srv = self._srv
        try:
            head, body, size, _ = encode_response(
                resp, self._terminal_is_head, True, srv._date_line
            )
        except (ValueError, TypeError) as exc:  # a head hook's malformed rejection
            srv._handler_errors += 1
            logger.error("%s: invalid head-hook response", srv.name, exc_info=exc)
            resp = _INTERNAL_ERROR
            head, body, size, _ = encode_response(resp, False, True, srv._date_line)
        if body is None:
            transport.write(head)
        else:
            transport.writelines([head, body])
        srv._bytes_out += size
        srv._responses[resp.status // 100] += 1
        linger = self._limits.close_linger_s_max
        if linger <= 0 or not transport.can_write_eof():
            self._close()
            return
        # Lingering close: half-close and drain input so the kernel does not answer the
        # client's unread bytes with a reset that can destroy the response in flight.
        transport.write_eof()
        self._lingering = True
        self._update_reading()  # read (and discard) again unless our writes are stuck
        self._linger_handle = self._loop.call_later(linger, self._end_linger)

    def _end_linger(self) -> None:
        self._linger_handle = None
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size():
            self._abort()  # the peer is not even reading our answer
        else:
            self._close()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = self._parse_dead = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is not None:
            transport.close()  # flushes what is buffered first
            if transport.get_write_buffer_size() and self._linger_handle is None:
                # A peer that does not read would keep the buffered answer (and this
                # connection) forever: the flush gets write_stall_s_max.
                self._linger_handle = self._loop.call_later(
                    self._limits.write_stall_s_max, self._abort
                )

    def _abort(self) -> None:
        self._closing = self._parse_dead = True
        if self._transport is not None:
            self._transport.abort()

    def _begin_drain(self) -> None:
        """Server shutdown: finish what was received, then close."""
        if self._closing:
            return
        self._draining = True
        if self._state != _BODY:  # a half-received head is abandoned; a body is finished
            self._parse_dead = True
            self._state = _IDLE
        if self._lingering:
            return
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing or self._lingering:
            return
        loop = self._loop
        now = loop.time()
        limits = self._limits
        period = self._srv._timer_period
        deadline = now + period
        if self._write_paused:
            deadline = self._write_stalled_at + limits.write_stall_s_max
            if now >= deadline:
                self._abort()  # the peer does not read our answers
                return
        elif self._reading_paused or self._parse_dead:
            pass  # waiting on our own handler or queue, not on the peer
        elif self._state == _HEAD:
            deadline = self._head_started + limits.request_head_s_max
            if now >= deadline:
                self._fail(error_response(408, "request_timeout", "request head too slow"))
                deadline = now + period
        elif self._state == _BODY:
            deadline = self._last_activity + limits.request_head_s_max
            if now >= deadline:
                self._fail(error_response(408, "request_timeout", "request body stalled"))
                deadline = now + period
            elif not self._continue_owed:
                # The average rate since the head falls below the minimum once more time
                # has passed than the bytes received allow (and never within the grace).
                rate_min = limits.body_rate_bytes_per_s_min
                started = self._body_started
                too_slow_at = started + max(limits.body_rate_grace_s, self._body_len / rate_min)
                if now >= too_slow_at:
                    self._fail(_body_too_slow(self._body_len / (now - started), rate_min))
                    deadline = now + period
                else:
                    deadline = min(deadline, too_slow_at)
        elif self._inflight is None and not self._waiting:
            deadline = self._last_activity + limits.keepalive_idle_s_max
            if now >= deadline:
                self._close()
                return
        if not self._closing and not self._lingering:
            # Never sleep longer than one period: a phase entered meanwhile (e.g. a new
            # request head) has a deadline at least one period away.
            self._timer = loop.call_at(min(deadline, now + period), self._on_timer)


def _header_too_large() -> Response:
    return error_response(431, "header_too_large", "request header fields too large")


def _body_too_slow(rate: float, rate_min: int) -> Response:
    return error_response(
        408,
        "body_too_slow",
        f"request body arrived at {rate:.0f} bytes/s, below the minimum of {rate_min} bytes/s",
    )


def _payload_too_large(limit: int) -> Response:
    return error_response(413, "payload_too_large", f"request body exceeds {limit} bytes")


class LeanHTTPServer:
    """HTTP/1.1 server for latency-critical data paths. See the module docstring.

    handler: called once per complete request; returns a Response (written at once) or an
        awaitable resolving to one (run as one Task; later requests on the connection wait).
    head_hook: called when a request head is complete, before any body byte is accepted;
        returning a Response rejects the request (sent with "Connection: close").
    body_limit: called for requests that carry a body; returns the maximum body bytes for
        that request (default ``limits.body_bytes_max``).
    fast: called with the bytes of a read that arrives between messages with no answer
        owed on the connection; a FastAnswer answers them as one whole request (the parser
        never sees them), None hands them to the parser. For a service's plainest request
        (the store's page-cache GET, the cache's hit); it must decline whatever it does not
        answer exactly as the handler would.
    name: used in log messages.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        limits: HttpLimits = HttpLimits(),  # noqa: B008 - frozen, safe to share
        head_hook: HeadHook | None = None,
        body_limit: BodyLimit | None = None,
        fast: FastPath | None = None,
        name: str = "leanhttp",
    ) -> None:
        self._handler = handler
        self._fast = fast
        self.limits = limits
        self.name = name
        self._head_hook = head_hook
        self._body_limit = body_limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_HttpProtocol] = set()
        self._tasks: set[asyncio.Future[Response]] = set()
        self._closing = False
        self._drained: asyncio.Event | None = None
        self._date_line = date_line()
        self._date_handle: asyncio.TimerHandle | None = None
        self._timer_period = min(
            limits.request_head_s_max,
            limits.keepalive_idle_s_max,
            limits.body_rate_grace_s,
            limits.write_stall_s_max,
        )
        # Statistics, bumped in place by the protocols.
        self._per_address: dict[str, int] = {}  # peer IP -> open connections (never 0)
        self._connections_total = 0
        self._connections_refused = dict.fromkeys(_REFUSAL_REASONS, 0)
        self._requests_total = 0
        self._responses = [0] * 10  # index: status // 100
        self._bytes_in = 0
        self._bytes_out = 0
        self._handler_errors = 0
        self._requests_fast = 0

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
    ) -> None:
        """Listen on (host, port) or on an already bound ``sock``. Port 0 picks a free one."""
        if self._server is not None:
            raise RuntimeError(f"{self.name}: already started")
        loop = self._loop = asyncio.get_running_loop()
        backlog = min(self.limits.connections_max, 4096)
        if sock is not None:
            self._server = await loop.create_server(self._make_protocol, sock=sock, backlog=backlog)
        else:
            self._server = await loop.create_server(
                self._make_protocol, host, port, reuse_port=reuse_port or None, backlog=backlog
            )
        self._refresh_date()

    def _make_protocol(self) -> _HttpProtocol:
        assert self._loop is not None
        return _HttpProtocol(self, self._loop)

    def _refresh_date(self) -> None:
        """Refresh the cached Date line, then again just after the next wall-clock second."""
        self._date_line = date_line()
        if self._loop is not None and not self._closing:
            delay = 1.0005 - time.time() % 1.0
            self._date_handle = self._loop.call_later(delay, self._refresh_date)

    @property
    def port(self) -> int:
        """The listening TCP port (after ``start``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"{self.name}: not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Stop accepting; let received requests finish for up to ``grace_s`` seconds.

        Idle connections close at once; busy ones close after their last answer (sent with
        "Connection: close"). After the grace period the remaining connections are aborted
        and remaining handler tasks cancelled. Idempotent.
        """
        server = self._server
        if server is None or self._closing:
            return
        self._closing = True
        server.close()
        for conn in list(self._conns):
            conn._begin_drain()
        if self._conns or self._tasks:
            self._drained = asyncio.Event()
            try:
                async with asyncio.timeout(grace_s):
                    await self._drained.wait()
            except TimeoutError:
                pass
        for conn in list(self._conns):
            conn._abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._date_handle is not None:
            self._date_handle.cancel()
            self._date_handle = None
        await asyncio.sleep(0)  # let aborted transports run connection_lost
        await server.wait_closed()

    def _maybe_drained(self) -> None:
        if self._drained is not None and not self._conns and not self._tasks:
            self._drained.set()

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters (see ServerStatistics)."""
        by_class = {f"{i}xx": n for i, n in enumerate(self._responses) if n or 2 <= i <= 5}
        return ServerStatistics(
            connections_open=len(self._conns),
            connections_total=self._connections_total,
            connections_refused=sum(self._connections_refused.values()),
            connections_refused_by_reason=dict(self._connections_refused),
            addresses_connected=len(self._per_address),
            connections_reading_paused=sum(1 for c in self._conns if c._reading_paused),
            requests_total=self._requests_total,
            responses_by_class=by_class,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            handler_errors=self._handler_errors,
            requests_fast=self._requests_fast,
        )
