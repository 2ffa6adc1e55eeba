"""A lean HTTP/1.1 keep-alive client: one ``asyncio.Protocol`` per connection driving
httptools' response parser (llhttp), and a pool of idle connections per origin.

Why not aiohttp's client: the internal hops router -> cache -> store run on every photo
view, and aiohttp's client costs about three times the CPU per request of this one (its
request/response objects, stream readers and tracing hooks). This client does one thing:
send a request whose body is in memory (or streamed from a file) and return the whole
response body as bytes.

Contract:

* ``request`` sends one request and returns a ``ClientResponse`` with the complete body.
  Bodies framed by Content-Length, chunked, or by the connection closing are all read;
  HEAD responses and 1xx/204/304 have no body.
* ``request_each`` sends one request to several origins at once (a blob to its replicas):
  the head is encoded once (only the request line and Host differ), every request with an
  idle connection is written before any answer is awaited and without a task, and each
  origin's answer or HttpClientError comes back in its slot.
* One request at a time per connection (no pipelining). After a complete response that
  allows keep-alive, the connection goes back to its origin's idle pool; anything else
  (errors, timeouts, a cancelled caller, "Connection: close", a close-delimited body)
  closes it, so a connection in the pool is always between two messages.
* Limits: ``connections_per_origin_max`` open connections per (host, port) (callers wait
  for one, inside their timeout); ``response_bytes_max`` body bytes (an announced or
  received body over it aborts the connection: ``HttpResponseTooLarge``);
  ``response_header_bytes_max`` head bytes; ``idle_s_max`` for an idle pooled connection;
  ``connect_timeout_s`` for a TCP connect; ``timeout_s`` per request, covering the wait
  for a connection, the connect, and the whole response.
* A body from a file (``body_file=FileBody(path_or_fd, offset, length)``) is streamed, never
  read whole: chunks of ``FILE_CHUNK_BYTES`` are read on the default executor and written
  only while the transport is below its high-water mark (``WRITE_BUFFER_BYTES_HIGH``), so
  a streamed request holds at most about one chunk plus that buffer. An answer (or a
  failure) that arrives before the body is sent stops the stream; that connection is not
  reused. Not ``loop.sendfile``: uvloop does not implement it (not even its fallback), and
  on the default loop it stops reading the socket while it runs, so an early answer or a
  reset goes unseen. The chunks cost about 0.1 s of CPU per 100 MiB (default loop; uvloop
  0.07 s), sendfile 0.02 s.
* A request that finds its reused connection closed by the server before any response
  byte arrived (the server's idle timeout raced us) is retried once on a new connection
  when its method is idempotent; a file body is then sent again from its start.
* Errors: ``HttpClientError`` and its subclasses only (``HttpConnectError``,
  ``HttpTimeoutError``, ``HttpProtocolError``, ``HttpResponseTooLarge``), and OSError when
  a body file cannot be read or is shorter than announced. An HTTP error status is not an
  exception: the caller reads ``status``.

Only plain ``http://`` URLs are supported: the client is for hops inside the cluster.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, cast

import httptools

from common.request_ids import current as current_request_id

__all__ = [
    "FILE_CHUNK_BYTES",
    "WRITE_BUFFER_BYTES_HIGH",
    "ClientResponse",
    "ClientStatistics",
    "FileBody",
    "HttpClientError",
    "HttpConnectError",
    "HttpProtocolError",
    "HttpResponseTooLarge",
    "HttpTimeoutError",
    "LeanHTTPClient",
]

_IDEMPOTENT = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS"))

# A file body is read and written in pieces of this size ...
FILE_CHUNK_BYTES: Final = 256 * 1024
# ... while a connection's write buffer is below this mark (asyncio resumes a paused writer
# at a quarter of it). A streamed body thus holds at most this plus one chunk in the buffer.
WRITE_BUFFER_BYTES_HIGH: Final = 512 * 1024

# Encoded header blocks remembered per header tuple (see LeanHTTPClient._encode); the memo
# is simply emptied when it reaches this size.
_HEADER_BLOCKS_MAX = 1024

# Response header names as servers usually spell them -> lower-cased str.
_HEADER_NAMES: dict[bytes, str] = {
    spelling.encode("ascii"): name.lower()
    for name in (
        "Content-Length",
        "Content-Type",
        "Connection",
        "Date",
        "ETag",
        "Etag",
        "Cache-Control",
        "Accept-Ranges",
        "Transfer-Encoding",
        "Server",
        "Retry-After",
        # pinhole's own answers on the photo path (cache -> router)
        "X-Pinhole-Cache",
        "X-Pinhole-Error",
    )
    for spelling in (name, name.lower())
}


class HttpClientError(Exception):
    """The request did not produce a complete response. ``url`` is the request's URL."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class HttpConnectError(HttpClientError):
    """The TCP connection could not be made (refused, unreachable, connect timeout), or the
    server closed the connection before answering."""


class HttpTimeoutError(HttpClientError):
    """``timeout_s`` passed before the response was complete; the connection was closed."""


class HttpProtocolError(HttpClientError):
    """The server's answer is not valid HTTP/1.1 or the connection broke mid-response."""


class HttpResponseTooLarge(HttpClientError):
    """The response body (or head) is over the client's limit; the connection was closed."""


class FileBody(NamedTuple):
    """A request body of ``length`` bytes read from a file at ``offset``.

    ``source`` is a path (the request opens it before sending anything and closes it when
    it ends) or an open file descriptor (read with pread, so requests may share it; the
    caller keeps it open until they have ended). The file must not change while a request
    reads it.
    """

    source: str | os.PathLike[str] | int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """A complete response. ``headers``: names lower-cased, repeated fields joined with
    ", "."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Counters since the client was created.

    requests_total: responses received completely. connections_opened: TCP connects that
    succeeded. connections_reused: requests sent on a connection taken from the idle pool.
    connections_open / connections_idle: now, over all origins. errors_by_kind: requests that
    failed, by exception class name. file_body_buffered_bytes_max: the most bytes a
    connection's write buffer held at once while streaming a file body (bounded by
    WRITE_BUFFER_BYTES_HIGH + FILE_CHUNK_BYTES).
    """

    requests_total: int
    connections_opened: int
    connections_reused: int
    connections_open: int
    connections_idle: int
    errors_by_kind: dict[str, int]
    file_body_buffered_bytes_max: int


class _Stale(Exception):
    """A reused connection was closed by the server before any byte of the answer."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 client connection; also the httptools callback target."""

    __slots__ = (
        "_body",
        "_body_first",
        "_body_len",
        "_body_max",
        "_client",
        "_close_delimited",
        "_done",
        "_drained",
        "_head_bytes",
        "_head_bytes_max",
        "_head_request",
        "_headers",
        "_headers_done",
        "_idle_until",
        "_loop",
        "_parser",
        "_pool",
        "_received",
        "_status",
        "_timer",
        "_timer_at",
        "_transport",
        "_url",
        "_waiter",
        "_write_paused",
        "alive",
        "deadline",
        "keep_alive",
    )

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._client = pool.client
        self._loop = pool.client._loop
        self._body_max = pool.client.response_bytes_max
        self._head_bytes_max = pool.client.response_header_bytes_max
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[ClientResponse] | None = None
        # One lazily re-armed timer per connection serves both the request deadline and the
        # idle expiry (see _arm): arming and cancelling a uvloop timer per request (and
        # another per return to the pool) cost more than the rest of the pool's work.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.deadline = 0.0  # loop time the request in progress must be answered by
        self._url = ""
        self._idle_until = 0.0  # while parked in the pool: loop time to close at; else 0
        self._head_request = False
        self._received = 0
        self._head_bytes = 0
        self._headers: dict[str, str] = {}
        self._headers_done = False
        self._close_delimited = False
        self._status = 0
        self._body_first = b""
        self._body: list[bytes] | None = None
        self._body_len = 0
        self._done = False
        # Flow control, used only by a streamed file body (in-memory bodies are written
        # whole): the transport is over its high-water mark; set when it drains.
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.alive = True
        self.keep_alive = False

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = tr = cast(asyncio.Transport, transport)
        tr.set_write_buffer_limits(high=WRITE_BUFFER_BYTES_HIGH)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        parser = self._parser
        if parser is None or self._done:
            # Bytes nobody asked for (between messages): the stream cannot be trusted.
            self._fail(HttpProtocolError("unexpected data from the server"))
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised, if one did
            if isinstance(cause, _StopParsing):
                return  # a HEAD response ended with its head
            if isinstance(cause, HttpClientError):
                self._fail(cause)
            else:
                self._fail(HttpProtocolError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost does the rest

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained = self._drained
        if drained is not None:
            self._drained = None
            if not drained.done():
                drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and self._close_delimited:
                self._complete()  # a body delimited by the connection's end
            elif self._received == 0:
                waiter.set_exception(_Stale())
            else:
                waiter.set_exception(
                    HttpProtocolError("the server closed the connection mid-response")
                )
        self._parser = None
        self._pool.connection_closed(self)

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._done:  # a second message in the same packet
            raise HttpProtocolError("unexpected data after the response")
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._head_bytes_max:
            raise HttpResponseTooLarge(
                f"response head over {self._head_bytes_max} bytes (response_header_bytes_max)"
            )
        if self._headers_done:
            return  # chunked trailer fields are dropped
        key = _HEADER_NAMES.get(name) or name.lower().decode("latin-1")
        val = value.rstrip().decode("latin-1")
        prev = self._headers.setdefault(key, val)
        if prev is not val:
            self._headers[key] = f"{prev}, {val}"

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._headers = {}
            self._head_bytes = 0
            return
        self._status = status
        self._headers_done = True
        if self._head_request:
            # llhttp cannot be told the request was HEAD (it knows 1xx/204/304 have no
            # body): end the message here and stop this parser, which is discarded.
            self.keep_alive = parser.should_keep_alive()
            self._complete()
            raise _StopParsing
        headers = self._headers
        length = headers.get("content-length")
        if length is not None and int(length) > self._body_max:
            raise HttpResponseTooLarge(
                f"response body of {length} bytes is over {self._body_max} (response_bytes_max)"
            )
        # No length and not chunked: the body runs until the server closes (never for
        # 204/304, which have no body).
        self._close_delimited = (
            length is None
            and status != 204
            and status != 304
            and "chunked" not in headers.get("transfer-encoding", "")
        )

    def on_body(self, body: bytes) -> None:
        n = self._body_len = self._body_len + len(body)
        if n > self._body_max:
            raise HttpResponseTooLarge(
                f"response body over {self._body_max} bytes (response_bytes_max)"
            )
        # Pieces are joined once at the end: one copy, none for a body in one piece.
        if self._body is not None:
            self._body.append(body)
        elif self._body_first:
            self._body = [self._body_first, body]
        else:
            self._body_first = body

    def on_message_complete(self) -> None:
        if not self._headers_done:
            return  # the end of an interim 1xx message
        parser = self._parser
        assert parser is not None
        self.keep_alive = parser.should_keep_alive() and not self._close_delimited
        self._complete()

    # ------------------------------------------------------------------ requests

    def _complete(self) -> None:
        self._done = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = b"".join(self._body) if self._body is not None else self._body_first
        waiter.set_result(ClientResponse(self._status, self._headers, body))

    def _fail(self, exc: BaseException) -> None:
        self.keep_alive = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.alive = False
        if self._transport is not None:
            self._transport.abort()

    def start(
        self, data: bytes, body: bytes, *, head_request: bool, deadline: float, url: str
    ) -> asyncio.Future[ClientResponse]:
        """Send one request; the future resolves with the complete response, or fails with
        HttpTimeoutError at loop time ``deadline``."""
        self._idle_until = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = head_request
        self._received = 0
        self._head_bytes = 0
        self._headers = {}
        self._headers_done = False
        self._close_delimited = False
        self._status = 0
        self._body_first = b""
        self._body = None
        self._body_len = 0
        self._done = False
        self.keep_alive = False
        self._url = url
        self.deadline = deadline
        self._arm(deadline)
        waiter = self._waiter = self._loop.create_future()
        transport = self._transport
        assert transport is not None
        if body:
            transport.writelines((data, body))
        else:
            transport.write(data)
        return waiter

    async def send_file(self, reader: _FileReader, waiter: asyncio.Future[ClientResponse]) -> bool:
        """Streams the file body ``reader`` reads after the head ``start`` wrote. Returns
        whether all of it was written: False when ``waiter`` resolved first (an early
        answer, a failure, the deadline). Raises OSError when the file cannot be read or
        ends early."""
        client = self._client
        body = reader.body
        pos = body.offset
        end = pos + body.length
        while pos < end:
            if waiter.done():
                return False
            if self._write_paused:
                drained = self._drained = self._loop.create_future()
                await asyncio.wait((drained, waiter), return_when=asyncio.FIRST_COMPLETED)
                continue
            chunk = await reader.pread(min(FILE_CHUNK_BYTES, end - pos), pos)
            transport = self._transport
            if waiter.done() or transport is None:
                return False
            if not chunk:
                raise OSError(
                    f"{body.source!r} ended at byte {pos}, before the "
                    f"{body.length} bytes announced from byte {body.offset}"
                )
            transport.write(chunk)
            pos += len(chunk)
            buffered = transport.get_write_buffer_size()
            if buffered > client._file_body_buffered_max:
                client._file_body_buffered_max = buffered
        return True

    def finish(self) -> None:
        """The caller is done with the current request."""
        self._waiter = None
        self._parser = None

    def park(self, idle_s_max: float) -> None:
        """Now idle in the pool: close after ``idle_s_max`` unless reused."""
        self._idle_until = until = self._loop.time() + idle_s_max
        self._arm(until)

    # ------------------------------------------------------------------ the timer

    def _arm(self, at: float) -> None:
        """Make sure the timer fires no later than ``at``. A timer that fires early (the
        usual case: it was armed for an earlier request's deadline) re-arms itself for the
        current one, so a steady stream of requests re-arms it about once per timeout
        instead of once per request."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= at:
                return
            timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.alive:
            return
        now = self._loop.time()
        waiter = self._waiter
        if waiter is not None:  # a request is in progress (or its caller not yet resumed)
            if waiter.done():
                return  # finish() or park() arms the timer again
            if now >= self.deadline:
                url = self._url
                waiter.set_exception(
                    HttpTimeoutError(f"no complete answer in time from {url}", url=url)
                )
                return  # the caller aborts the connection
            self._arm(self.deadline)
        elif self._idle_until:
            if now >= self._idle_until:
                self.alive = False  # not taken from the pool while the close is under way
                if self._transport is not None:
                    self._transport.close()
                return
            self._arm(self._idle_until)


class _StopParsing(Exception):
    """Raised from a parser callback when a message ends without its parser's knowledge."""


class _FileReader:
    """Reads a file body on the loop's default executor.

    A cancelled caller does not stop a read already running on a thread, so a descriptor
    this reader opened is closed only once no read of it is in flight.
    """

    __slots__ = ("_fd", "_loop", "_owned", "_pending", "body")

    def __init__(
        self, body: FileBody, fd: int, loop: asyncio.AbstractEventLoop, *, owned: bool
    ) -> None:
        self.body = body
        self._fd = fd
        self._loop = loop
        self._owned = owned
        self._pending: asyncio.Future[bytes] | None = None

    @classmethod
    async def open(cls, body: FileBody, loop: asyncio.AbstractEventLoop) -> _FileReader:
        source = body.source
        if isinstance(source, int):
            return cls(body, source, loop, owned=False)
        opening = loop.run_in_executor(None, os.open, source, os.O_RDONLY)
        try:
            fd = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)
            raise
        return cls(body, fd, loop, owned=True)

    async def pread(self, size: int, offset: int) -> bytes:
        read = self._pending = self._loop.run_in_executor(None, os.pread, self._fd, size, offset)
        chunk = await asyncio.shield(read)
        self._pending = None
        return chunk

    def close(self) -> None:
        if not self._owned:
            return
        self._owned = False
        fd, pending = self._fd, self._pending
        if pending is None or pending.done():
            os.close(fd)
        else:
            pending.add_done_callback(lambda read: _close_after(read, fd))


def _close_opened(opening: asyncio.Future[int]) -> None:
    """An open whose caller was cancelled: close what it opened."""
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())


def _close_after(read: asyncio.Future[bytes], fd: int) -> None:
    if not read.cancelled():
        read.exception()  # retrieved: its caller is gone
    os.close(fd)


class _Pool:
    """Connections of one origin: the idle ones (most recently used last) and the callers
    waiting for one when ``connections_per_origin_max`` are open."""

    __slots__ = ("client", "host", "host_header", "idle", "open", "port", "waiters")

    def __init__(self, client: LeanHTTPClient, host: str, port: int, host_header: str) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.host_header = host_header
        self.idle: deque[_Connection] = deque()
        self.open = 0  # connections open or being opened
        # A waiter resolves with an idle connection handed over directly, or None: a slot
        # is free, open a connection.
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(self, deadline: float, url: str) -> tuple[_Connection, bool]:
        """A connection (and whether it was reused), within ``deadline`` (loop time)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.alive:
                return conn, True
        if self.open >= self.client.connections_per_origin_max:
            fut: asyncio.Future[_Connection | None] = self.client._loop.create_future()
            self.waiters.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    got = await fut
            except BaseException as exc:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._hand_back(fut.result())  # handed to us as we gave up
                if isinstance(exc, TimeoutError):
                    raise HttpTimeoutError(
                        f"no connection to {self.host}:{self.port} became free in time "
                        "(connections_per_origin_max)",
                        url=url,
                    ) from None
                raise
            if got is not None:
                return got, True
            # got None: a slot was reserved for us (open already counts it).
        else:
            self.open += 1
        try:
            return await self._connect(deadline, url), False
        except BaseException:
            self._hand_back(None)
            raise

    async def _connect(self, deadline: float, url: str) -> _Connection:
        client = self.client
        loop = client._loop
        timeout = min(client.connect_timeout_s, deadline - loop.time())
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                _, proto = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port
                )
        except TimeoutError:
            raise HttpConnectError(
                f"connect to {self.host}:{self.port} timed out after {timeout:.3g} s", url=url
            ) from None
        except OSError as exc:
            raise HttpConnectError(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}", url=url
            ) from None
        client._connections_opened += 1
        return proto

    def release(self, conn: _Connection) -> None:
        """The request on ``conn`` is complete and the connection may be reused."""
        if conn.alive:  # else connection_closed has accounted for it
            self._hand_back(conn)

    def _hand_back(self, conn: _Connection | None) -> None:
        """Give a connection, or (None) a reserved slot, to the first live waiter; else the
        connection goes idle and the slot is freed."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        if conn is None:
            self.open -= 1
        elif self.client._closed:
            conn.abort()
        else:
            conn.park(self.client.idle_s_max)
            self.idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        conn.abort()  # connection_closed follows from connection_lost

    def connection_closed(self, conn: _Connection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        # Its slot goes to a waiter (which then connects), or is freed.
        self._hand_back(None)


class LeanHTTPClient:
    """HTTP/1.1 client with a keep-alive pool per origin. See the module docstring.

    Create it inside a running event loop; ``close()`` it when done. Requests to different
    origins are independent; a request never holds more than one connection.
    """

    def __init__(
        self,
        *,
        connections_per_origin_max: int = 64,
        response_bytes_max: int = 64 * 1024 * 1024,
        response_header_bytes_max: int = 64 * 1024,
        connect_timeout_s: float = 2.0,
        idle_s_max: float = 30.0,
    ) -> None:
        if connections_per_origin_max < 1:
            raise ValueError("connections_per_origin_max must be >= 1")
        if response_bytes_max < 0 or response_header_bytes_max < 1:
            raise ValueError("response_bytes_max and response_header_bytes_max must be positive")
        if not connect_timeout_s > 0 or not idle_s_max > 0:
            raise ValueError("connect_timeout_s and idle_s_max must be > 0")
        self.connections_per_origin_max = connections_per_origin_max
        self.response_bytes_max = response_bytes_max
        self.response_header_bytes_max = response_header_bytes_max
        self.connect_timeout_s = connect_timeout_s
        self.idle_s_max = idle_s_max
        self._loop = asyncio.get_running_loop()
        self._pools: dict[str, _Pool] = {}  # "http://host:port" -> pool
        self._header_blocks: dict[Sequence[tuple[str, str]], str] = {}
        self._closed = False
        self._requests_total = 0
        self._connections_opened = 0
        self._connections_reused = 0
        self._errors: dict[str, int] = {}
        self._file_body_buffered_max = 0

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        body_file: FileBody | None = None,
        timeout_s: float = 10.0,
    ) -> ClientResponse:
        """Send ``method url`` with ``headers`` and ``body`` (or the file range
        ``body_file``, streamed); the complete response.

        ``url`` is ``http://host[:port]/path[?query]``. Host, Content-Length and (when the
        client is closing) Connection are written by the client. Raises HttpClientError
        (a subclass) when no complete response arrived within ``timeout_s`` (which covers
        sending the body); OSError when ``body_file`` cannot be read or is shorter than its
        length; ValueError for a URL or header the client cannot send, or for both a body
        and a body file.
        """
        if self._closed:
            raise HttpClientError("the client is closed", url=url)
        pool, target = self._route(url)
        reader = None
        if body_file is None:
            length = len(body)
        else:
            if body or body_file.offset < 0 or body_file.length < 0:
                raise ValueError("body_file needs an empty body and a non-negative range")
            length = body_file.length
        data = self._encode(method, target, pool.host_header, headers, length)
        deadline = self._loop.time() + timeout_s
        head_request = method == "HEAD"
        attempts = 2 if method in _IDEMPOTENT else 1
        idle = pool.idle
        if body_file is not None:
            # Opened once, before a byte is sent; a retry reads it again from the start.
            reader = await _FileReader.open(body_file, self._loop)
        try:
            while True:
                attempts -= 1
                # The common case inline: an idle connection, taken without awaiting
                # acquire() (a coroutine per request that has nothing to wait for).
                conn = None
                while idle:
                    conn = idle.pop()
                    if conn.alive:
                        break
                    conn = None
                if conn is not None:
                    reused = True
                else:
                    conn, reused = await pool.acquire(deadline, url)
                if reused:
                    self._connections_reused += 1
                try:
                    if not conn.alive:
                        raise _Stale
                    waiter = conn.start(
                        data, body, head_request=head_request, deadline=deadline, url=url
                    )
                    if reader is not None:
                        await self._send_file(conn, reader, waiter)
                    resp = await waiter
                except _Stale:
                    conn.finish()
                    if reused and attempts > 0:
                        continue
                    raise HttpConnectError(
                        f"{pool.host}:{pool.port} closed the connection without answering",
                        url=url,
                    ) from None
                except BaseException:
                    conn.finish()
                    pool.discard(conn)
                    raise
                conn.finish()
                if conn.keep_alive and not self._closed:
                    pool.release(conn)
                else:
                    pool.discard(conn)
                self._requests_total += 1
                return resp
        except HttpClientError as exc:
            exc.url = exc.url or url
            kind = type(exc).__name__
            self._errors[kind] = self._errors.get(kind, 0) + 1
            raise
        finally:
            if reader is not None:
                reader.close()

    async def request_each(
        self,
        method: str,
        urls: Sequence[str],
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        timeout_s: float = 10.0,
    ) -> list[ClientResponse | HttpClientError]:
        """``request(method, url, ...)`` for every url of ``urls`` at once, one answer (or
        the HttpClientError it ended with) per url, in order; nothing is raised for one
        url's failure. The same request to several origins (a blob to its replicas).

        Built once, sent back to back: the head fields (headers, Content-Length, request
        id) are encoded once and only each url's request line and Host are its own; the
        body is the same object on every connection. Every url with an idle connection
        gets its request written before any answer is awaited, with no task per request;
        a url that needs a new connection (or whose idle one turned out closed) goes
        through ``request`` on its own task. A cancelled caller aborts every connection
        still in use and cancels those tasks, as ``request`` does for its one."""
        if self._closed:
            raise HttpClientError("the client is closed", url=urls[0] if urls else "")
        loop = self._loop
        deadline = loop.time() + timeout_s
        head_request = method == "HEAD"
        tail = b""
        sent: list[tuple[_Pool, _Connection, asyncio.Future[ClientResponse]] | None] = []
        tasks: dict[int, asyncio.Task[ClientResponse]] = {}
        try:
            for i, url in enumerate(urls):
                pool, target = self._route(url)
                conn = None
                idle = pool.idle
                while idle:
                    conn = idle.pop()
                    if conn.alive:
                        break
                    conn = None
                if conn is None:
                    sent.append(None)
                    tasks[i] = loop.create_task(
                        self.request(method, url, headers=headers, body=body, timeout_s=timeout_s)
                    )
                    continue
                if not tail:
                    tail = self._encode_fields_once(method, headers, len(body))
                data = self._request_line(method, target, pool.host_header) + tail
                self._connections_reused += 1
                sent.append((pool, conn, conn.start(
                    data, body, head_request=head_request, deadline=deadline, url=url
                )))  # fmt: skip
            results: list[ClientResponse | HttpClientError] = []
            for i, url in enumerate(urls):
                entry = sent[i]
                if entry is None:
                    results.append(await _answer_or_error(tasks.pop(i)))
                    continue
                pool, conn, waiter = entry
                try:
                    resp = await waiter
                except _Stale:
                    # The server closed the idle connection as we wrote: once more on a
                    # new one, as request() does (every url gets the same method).
                    conn.finish()
                    sent[i] = None
                    again = self.request(
                        method, url, headers=headers, body=body, timeout_s=timeout_s
                    )
                    results.append(await _answer_or_error(again))
                    continue
                except HttpClientError as exc:
                    conn.finish()
                    pool.discard(conn)
                    sent[i] = None
                    exc.url = exc.url or url
                    kind = type(exc).__name__
                    self._errors[kind] = self._errors.get(kind, 0) + 1
                    results.append(exc)
                    continue
                conn.finish()
                sent[i] = None
                if conn.keep_alive and not self._closed:
                    pool.release(conn)
                else:
                    pool.discard(conn)
                self._requests_total += 1
                results.append(resp)
            return results
        except BaseException:
            for entry in sent:
                if entry is not None:
                    entry[1].finish()
                    entry[0].discard(entry[1])
            for task in tasks.values():
                if not task.cancel() and not task.cancelled():
                    task.exception()  # retrieved: no "exception was never retrieved" log
            raise

    async def _send_file(
        self, conn: _Connection, reader: _FileReader, waiter: asyncio.Future[ClientResponse]
    ) -> None:
        try:
            complete = await conn.send_file(reader, waiter)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: the stream's own error is the one raised
            raise
        if not complete:
            # Answered (or failed) before the whole body left: the stream cannot carry
            # another request.
            conn.keep_alive = False

    def _route(self, url: str) -> tuple[_Pool, str]:
        if not url.startswith("http://"):
            raise ValueError(f"not an http:// URL: {url!r}")
        slash = url.find("/", 7)
        origin, target = (url, "/") if slash < 0 else (url[:slash], url[slash:])
        pool = self._pools.get(origin)
        if pool is None:
            authority = origin[7:]
            host, port = _split_authority(authority, url)
            pool = self._pools[origin] = _Pool(self, host, port, authority)
        return pool, target

    def _encode(
        self,
        method: str,
        target: str,
        host_header: str,
        headers: Sequence[tuple[str, str]],
        length: int,
    ) -> bytes:
        return self._request_line(method, target, host_header) + self._encode_fields_once(
            method, headers, length
        )

    @staticmethod
    def _request_line(method: str, target: str, host_header: str) -> bytes:
        """The request line and Host: the only part of a request that names its origin."""
        # A space, CR or LF in the target would split the request line (or the request).
        if " " in target or "\r" in target or "\n" in target:
            raise ValueError("CR/LF in a header field or a space in the request target")
        if "\r" in host_header or "\n" in host_header:
            raise ValueError("CR/LF in a header field or a space in the request target")
        return f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")

    def _encode_fields_once(
        self, method: str, headers: Sequence[tuple[str, str]], length: int
    ) -> bytes:
        """The head after Host, to its blank line: the same for every origin."""
        if headers:
            # Callers on the photo path send the same few header tuples over and over
            # (the router keeps them per volume): encode and check each one once.
            block = self._header_blocks.get(headers) if type(headers) is tuple else None
            if block is None:
                block = _encode_fields(headers)
                if type(headers) is tuple:
                    if len(self._header_blocks) >= _HEADER_BLOCKS_MAX:
                        self._header_blocks.clear()
                    self._header_blocks[headers] = block
        else:
            block = ""
        if length or method in ("POST", "PUT", "PATCH"):
            length_line = f"Content-Length: {length}\r\n"
        else:
            length_line = ""
        request_id = current_request_id.get()
        if request_id is not None:  # well formed (request_ids.accept): no CR, LF or space
            length_line = f"X-Request-Id: {request_id}\r\n{length_line}"
        return f"{block}{length_line}\r\n".encode("latin-1")

    async def close(self) -> None:
        """Closes the idle connections and fails the requests waiting for one; requests
        already sent finish, and their connections close after them. Later requests raise
        HttpClientError. Idempotent."""
        self._closed = True
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().abort()
            for fut in pool.waiters:
                if not fut.done():
                    fut.set_exception(HttpClientError("the client is closed"))
        await asyncio.sleep(0)  # let aborted transports run connection_lost

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            requests_total=self._requests_total,
            connections_opened=self._connections_opened,
            connections_reused=self._connections_reused,
            connections_open=sum(p.open for p in self._pools.values()),
            connections_idle=sum(len(p.idle) for p in self._pools.values()),
            errors_by_kind=dict(self._errors),
            file_body_buffered_bytes_max=self._file_body_buffered_max,
        )


async def _answer_or_error(
    answer: Awaitable[ClientResponse],
) -> ClientResponse | HttpClientError:
    """The response, or the HttpClientError it failed with (returned, not raised)."""
    try:
        return await answer
    except HttpClientError as exc:
        return exc


def _encode_fields(headers: Sequence[tuple[str, str]]) -> str:
    """Header fields as request lines; ValueError when a name or value smuggles CR/LF."""
    text = ""
    for name, value in headers:
        text += f"{name}: {value}\r\n"
    # One scan instead of a check per field: every line has exactly one CR and one LF
    # unless a name or value smuggles its own (request splitting).
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("CR/LF in a header field or a space in the request target")
    return text


def _split_authority(authority: str, url: str) -> tuple[str, int]:
    if authority.startswith("["):  # [v6]:port
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    try:
        port = int(port_text) if port_text else 80
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad host or port in {url!r}")
    return host, port
