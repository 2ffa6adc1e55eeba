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


class LeanRedisError(FeedError):
    """An error reply from Redis, or the connection failing under a request."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
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

    def _fail_waiting(self, error: Exception) -> None:
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
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
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
        connect: Any
        if parts.scheme == "unix":
            connect = loop.create_unix_connection(_Protocol, parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            connect = loop.create_connection(
                _Protocol, parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
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
            await self._wait(protocol, protocol.send(args))
        return protocol

    async def _wait(self, protocol: _Protocol, future: asyncio.Future[Any]) -> Any:
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            protocol.fail(LeanRedisError(f"no reply from Redis within {self.timeout_s} s"))
            raise LeanRedisError(f"no reply from Redis within {self.timeout_s} s") from None

    async def call(self, *args: Any) -> Any:
        protocol = await self._connection()
        return await self._wait(protocol, protocol.send(args))

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
