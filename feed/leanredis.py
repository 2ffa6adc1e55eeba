"""A lean Redis client for the feed read's one hot call (`RedisHotStore.pages`).

redis-py's asyncio client spends about 285 us of CPU on an EVALSHA over ten lists (its
connection pool, command packing, response handling and script wrapper) and about 110 us
on a PING; the same call through this client costs about 70 us and a PING 25 us
(ARCHITECTURE.md, "A lean Redis client for the feed read"). A feed read makes one such
call, so that difference is a fifth of its CPU. Everything else in the hot store stays on
redis-py.

One connection, pipelined: requests are written as they come and the replies, which Redis
sends in order, resolve the waiting futures first in first out; hiredis parses them. A
connection that fails or times out fails every request waiting on it and is replaced on
the next call. Scripts are called by their SHA and loaded once on NOSCRIPT.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

import hiredis

from feed.errors import FeedError

# Requests waiting for their replies on the connection at most; more fail at once.
LEAN_PENDING_MAX: Final = 10_000
# A reply slower than this fails its request and drops the connection (replies behind a
# lost one would be misattributed otherwise).
LEAN_TIMEOUT_S: Final = 5.0
# A reply this close to its deadline when the timer fires counts as overdue (the loop's
# timers have millisecond resolution).
_TIMER_SLACK_S: Final = 0.001


class LeanRedisError(FeedError):
    """An error reply from Redis, or the connection failing under a request."""


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        # When each waiting request's reply is due (loop time), in the same order.
        self.deadlines: collections.deque[float] = collections.deque()
        self.timeout_s = timeout_s
        # One timer for the connection, due at the oldest waiting request's deadline (a
        # `wait_for` per request cost a timer, a callback and a coroutine frame each).
        self._watch: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(LeanRedisError("unexpected reply from Redis"))
                return
            future = self.waiting.popleft()
            self.deadlines.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(LeanRedisError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_waiting(LeanRedisError(f"connection to Redis lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()
        self._fail_waiting(error)

    def _overdue(self) -> None:
        """The timer: fails the connection when its oldest waiting reply is overdue (within
        a millisecond, the timer's resolution), else waits for that one."""
        self._watch = None
        if not self.deadlines:
            return
        loop = asyncio.get_running_loop()
        first = self.deadlines[0]
        if first <= loop.time() + _TIMER_SLACK_S:
            self.fail(LeanRedisError(f"no reply from Redis within {self.timeout_s} s"))
        else:
            self._watch = loop.call_at(first, self._overdue)

    def _fail_waiting(self, error: Exception) -> None:
        self.deadlines.clear()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self.lost or self.transport is None:
            raise LeanRedisError("connection to Redis lost")
        if len(self.waiting) >= LEAN_PENDING_MAX:
            raise LeanRedisError(f"more than {LEAN_PENDING_MAX} Redis requests waiting")
        self.transport.write(_pack(args))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(future)
        deadline = loop.time() + self.timeout_s
        self.deadlines.append(deadline)
        if self._watch is None:
            self._watch = loop.call_at(deadline, self._overdue)
        return future


def _pack(args: tuple[Any, ...]) -> bytes:
    """A RESP array of bulk strings (what every Redis command is)."""
    parts = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)])


class LeanRedis:
    def __init__(self, url: str, *, timeout_s: float = LEAN_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._shas: dict[bytes, bytes] = {}  # script -> its SHA1, hashed once

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is None or self._protocol.lost:
                self._protocol = await self._connect()
            return self._protocol

    async def _connect(self) -> _Protocol:
        parts = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        timeout_s = self.timeout_s

        def made_protocol() -> _Protocol:
            return _Protocol(timeout_s)

        connect: Any
        if parts.scheme == "unix":
            connect = loop.create_unix_connection(made_protocol, parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            connect = loop.create_connection(
                made_protocol, parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
            )
        _, made = await asyncio.wait_for(connect, self.timeout_s)
        protocol: _Protocol = made
        hello: list[tuple[Any, ...]] = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            password = unquote(parts.password)
            hello.append((b"AUTH", user, password) if user else (b"AUTH", password))
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        if db and db != "0":
            hello.append((b"SELECT", db))
        for args in hello:
            await protocol.send(args)
        return protocol

    async def call(self, *args: Any) -> Any:
        """The reply; LeanRedisError for an error reply, a lost connection or a reply not
        there within `timeout_s` (the connection's timer fails every waiting request)."""
        protocol = await self._connection()
        return await protocol.send(args)

    async def evalsha(self, script: bytes, keys: list[str], args: list[Any]) -> Any:
        """Runs a Lua script by its SHA, loading it first when Redis does not know it."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script).hexdigest().encode()
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except LeanRedisError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        await self.call(b"SCRIPT", b"LOAD", script)
        return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
