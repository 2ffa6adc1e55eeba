"""Tests for common.leanhttp over real sockets on 127.0.0.1.

Raw asyncio streams are used where exact bytes matter (pipelining, malformed input,
framing); aiohttp's client checks interoperability with a real HTTP client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import aiohttp
import pytest
import uvloop
from hypothesis import example, given
from hypothesis import strategies as st

from common.leanhttp import (
    HttpLimits,
    LeanHTTPServer,
    Request,
    Response,
    encode_header_lines,
    error_response,
    json_response,
)
from common.leanhttp.message import parse_query

# A stuck test fails on its own instead of holding the suite for the global timeout.
pytestmark = pytest.mark.timeout(30)

# --------------------------------------------------------------------------- helpers


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Conn:
    """A raw client connection that counts what it sends and receives."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: int = 0
    received: int = 0
    log: list[bytes] = field(default_factory=list)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()

    async def reply(self, method: str = "GET") -> Reply:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        self.received += len(head)
        lines = head.decode("latin-1").split("\r\n")
        version, status, reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                assert name.lower() not in headers, f"duplicate header {name}"
                headers[name.lower()] = value.strip()
        code = int(status)
        body = b""
        if method != "HEAD" and code >= 200 and code not in (204, 304):
            body = await asyncio.wait_for(
                self.reader.readexactly(int(headers["content-length"])), 5
            )
            self.received += len(body)
        return Reply(code, reason, headers, body, head)

    async def at_eof(self, wait_s: float = 2.0) -> bool:
        """True if the server closed the connection (EOF or reset) without more data."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait_s)
        except ConnectionResetError:
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionResetError, BrokenPipeError):
            pass


def get(path: str = "/", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


StartServer = Callable[..., Awaitable[LeanHTTPServer]]
Connect = Callable[[LeanHTTPServer], Awaitable[Conn]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[LeanHTTPServer] = []

    async def start(handler: Callable[[Request], object], **kwargs: object) -> LeanHTTPServer:
        server = LeanHTTPServer(handler, **kwargs)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close(grace_s=0.5)


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    conns: list[Conn] = []

    async def open_conn(server: LeanHTTPServer) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        conn = Conn(reader, writer)
        conns.append(conn)
        return conn

    yield open_conn
    for conn in conns:
        await conn.close()


def echo(request: Request) -> Response:
    """Sync handler describing the request it got."""
    payload = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "params": request.query_params(),
        "len": len(request.body),
        "sha": hashlib.sha256(request.body).hexdigest(),
        "version": request.http_version,
        "keep_alive": request.keep_alive,
        "headers": request.headers,
        "remote": request.remote,
    }
    return json_response(200, payload, headers=[("X-Echo", "1")])


# --------------------------------------------------------------------------- basics


async def test_sync_and_async_handlers_with_aiohttp_client(start_server: StartServer) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.01)
        return Response(201, b"async:" + request.path.encode(), content_type="text/plain")

    def route(request: Request) -> Response | Awaitable[Response]:
        if request.path.startswith("/async"):
            return slow(request)
        return Response(200, b"sync:" + request.path.encode(), [("ETag", '"v1"')], "text/plain")

    server = await start_server(route)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.port}/s/1") as resp:
            assert resp.status == 200
            assert await resp.read() == b"sync:/s/1"
            assert resp.headers["Content-Type"] == "text/plain"
            assert resp.headers["ETag"] == '"v1"'
            assert resp.headers["Content-Length"] == "9"
            assert resp.headers["Date"].endswith(" GMT")
        async with session.get(f"http://127.0.0.1:{server.port}/async/2") as resp:
            assert resp.status == 201
            assert await resp.read() == b"async:/async/2"
    stats = server.statistics()
    assert stats.requests_total == 2
    assert stats.responses_by_class["2xx"] == 2
    assert stats.connections_total == 1  # aiohttp reused its keep-alive connection


async def test_request_fields(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo)
    conn = await connect(server)
    await conn.send(
        b"GET /a%20b/c?x=1&y=%C3%A9&x=2 HTTP/1.1\r\nHost: t\r\nX-Multi: one\r\n"
        b"x-multi: two  \r\n\r\n"
    )
    reply = await conn.reply()
    assert reply.status == 200
    assert reply.headers["x-echo"] == "1"
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "keep-alive"
    got = reply.json()
    assert isinstance(got, dict)
    assert got["method"] == "GET"
    assert got["path"] == "/a%20b/c"  # raw, not percent-decoded
    assert got["query"] == "x=1&y=%C3%A9&x=2"
    assert got["params"] == {"x": "2", "y": "é"}
    assert got["headers"] == {"host": "t", "x-multi": "one, two"}
    assert got["version"] == "1.1"
    assert got["keep_alive"] is True
    assert got["len"] == 0
    local_port = conn.writer.get_extra_info("sockname")[1]
    assert got["remote"] == f"127.0.0.1:{local_port}"

    await conn.send(b"GET http://example.org:8080/abs/p?q=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    got = (await conn.reply()).json()
    assert isinstance(got, dict)
    assert (got["path"], got["query"]) == ("/abs/p", "q=1")
    await conn.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
    got = (await conn.reply()).json()
    assert isinstance(got, dict)
    assert (got["method"], got["path"], got["query"]) == ("OPTIONS", "*", "")


async def test_keepalive_reuses_one_connection(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(lambda r: Response(200, r.path.encode()))
    conn = await connect(server)
    for i in range(50):
        await conn.send(get(f"/n/{i}"))
        reply = await conn.reply()
        assert (reply.status, reply.body) == (200, f"/n/{i}".encode())
    stats = server.statistics()
    assert stats.connections_total == 1
    assert stats.connections_open == 1
    assert stats.requests_total == 50


async def test_pipelining_answers_in_request_order(
    start_server: StartServer, connect: Connect
) -> None:
    calls: list[str] = []

    async def slow() -> Response:
        await asyncio.sleep(0.1)
        calls.append("slow-done")
        return Response(200, b"slow")

    def route(request: Request) -> Response | Awaitable[Response]:
        calls.append(request.path)
        if request.path == "/slow":
            return slow()
        return Response(200, b"fast" + request.path.encode())

    server = await start_server(route)
    conn = await connect(server)
    await conn.send(get("/slow") + get("/fast1") + get("/fast2"))  # one packet
    bodies = [(await conn.reply()).body for _ in range(3)]
    assert bodies == [b"slow", b"fast/fast1", b"fast/fast2"]
    # Handlers run one at a time per connection, in order.
    assert calls == ["/slow", "slow-done", "/fast1", "/fast2"]


async def test_pipeline_depth_limit_pauses_and_resumes(
    start_server: StartServer, connect: Connect
) -> None:
    async def handler(request: Request) -> Response:
        await asyncio.sleep(0)
        return Response(200, request.path.encode())

    server = await start_server(handler, limits=HttpLimits(pipeline_depth_max=2))
    conn = await connect(server)
    await conn.send(b"".join(get(f"/{i}") for i in range(40)))
    for i in range(40):
        assert (await conn.reply()).body == f"/{i}".encode()
    assert server.statistics().requests_total == 40


async def test_write_flow_control_large_responses(
    start_server: StartServer, connect: Connect
) -> None:
    blob = bytes(range(256)) * 8192  # 2 MiB
    server = await start_server(
        lambda r: Response(200, memoryview(blob)[: int(r.path[1:])]),
        limits=HttpLimits(write_buffer_bytes_high=64 * 1024),
    )
    conn = await connect(server)
    sizes = [len(blob), 10, len(blob) - 1, 3]
    await conn.send(b"".join(get(f"/{n}") for n in sizes))
    await asyncio.sleep(0.05)  # let the server hit its high-water mark while we do not read
    for n in sizes:
        reply = await conn.reply()
        assert reply.body == blob[:n]


async def test_head_has_length_but_no_body(start_server: StartServer, connect: Connect) -> None:
    def route(request: Request) -> Response:
        if request.path == "/explicit":
            return Response(200, b"", [("Content-Length", "12345")])
        return Response(200, b"0123456789", content_type="application/octet-stream")

    server = await start_server(route)
    conn = await connect(server)
    await conn.send(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n")
    reply = await conn.reply("HEAD")
    assert reply.status == 200
    assert reply.headers["content-length"] == "10"
    assert reply.headers["content-type"] == "application/octet-stream"
    await conn.send(b"HEAD /explicit HTTP/1.1\r\nHost: t\r\n\r\n")
    reply = await conn.reply("HEAD")
    assert reply.headers["content-length"] == "12345"
    # Framing is intact: the next response is the next thing on the wire.
    await conn.send(get("/x"))
    reply = await conn.reply()
    assert reply.body == b"0123456789"


async def test_204_and_304_carry_no_body(start_server: StartServer, connect: Connect) -> None:
    def route(request: Request) -> Response:
        status = int(request.path[1:])
        return Response(status, b"must not be sent")

    server = await start_server(route)
    conn = await connect(server)
    await conn.send(get("/204") + get("/304") + get("/200"))
    for status in (204, 304):
        reply = await conn.reply()
        assert reply.status == status
        assert "content-length" not in reply.headers
        assert reply.body == b""
    reply = await conn.reply()
    assert (reply.status, reply.body) == (200, b"must not be sent")


async def test_unknown_status_code_and_memoryview(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(lambda r: Response(599, memoryview(b"abcdef")[2:4]))
    conn = await connect(server)
    await conn.send(get())
    reply = await conn.reply()
    assert (reply.status, reply.reason, reply.body) == (599, "", b"cd")
    assert server.statistics().responses_by_class["5xx"] == 1


async def test_pre_encoded_head_lines_follow_the_fields(
    start_server: StartServer, connect: Connect
) -> None:
    lines = encode_header_lines((("ETag", '"v1"'), ("X-Cache", "hit")))
    assert lines == b'ETag: "v1"\r\nX-Cache: hit\r\n'

    def route(request: Request) -> Response:
        if request.path == "/both":
            return Response(200, b"abc", (("X-First", "1"),), "text/plain", lines)
        return Response(304, b"", (), None, lines)

    server = await start_server(route)
    conn = await connect(server)
    await conn.send(get("/both") + get("/304"))
    reply = await conn.reply()
    assert reply.raw_head.index(b"X-First: 1\r\n") < reply.raw_head.index(b'ETag: "v1"\r\n')
    assert (reply.headers["x-cache"], reply.headers["content-length"]) == ("hit", "3")
    assert reply.body == b"abc"
    reply = await conn.reply()
    assert (reply.status, reply.headers["etag"], reply.body) == (304, '"v1"', b"")


def test_encode_header_lines_refuses_what_the_server_writes_or_splits() -> None:
    for fields in (
        (("X-A", "1\r\nX-Injected: 1"),),
        (("X\nA", "1"),),
        (("Content-Length", "3"),),
        (("Connection", "close"),),
    ):
        with pytest.raises(ValueError):
            encode_header_lines(fields)


# --------------------------------------------------------------------------- bodies


async def test_content_length_body_in_pieces(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo)
    conn = await connect(server)
    body = bytes(range(256)) * 400  # 100 KiB
    await conn.send(f"PUT /o HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    for i in range(0, len(body), 7000):
        await conn.send(body[i : i + 7000])
        await asyncio.sleep(0)
    got = (await conn.reply()).json()
    assert isinstance(got, dict)
    assert (got["method"], got["len"]) == ("PUT", len(body))
    assert got["sha"] == hashlib.sha256(body).hexdigest()
    # Small body in the same packet as the head, then a GET on the same connection.
    await conn.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" + get("/g"))
    first, second = (await conn.reply()).json(), (await conn.reply()).json()
    assert isinstance(first, dict) and isinstance(second, dict)
    assert (first["len"], first["sha"]) == (3, hashlib.sha256(b"abc").hexdigest())
    assert (second["path"], second["len"]) == ("/g", 0)


async def test_body_method_without_length_has_empty_body(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(echo)
    conn = await connect(server)
    await conn.send(b"POST /nolen HTTP/1.1\r\nHost: t\r\n\r\n" + get("/next"))
    first, second = (await conn.reply()).json(), (await conn.reply()).json()
    assert isinstance(first, dict) and isinstance(second, dict)
    assert (first["path"], first["len"]) == ("/nolen", 0)
    assert second["path"] == "/next"


async def test_chunked_body(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo)
    conn = await connect(server)
    await conn.send(b"PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    await conn.send(b"5\r\nhello\r\n")
    await conn.send(b"6\r\n world\r\n0\r\n\r\n")
    got = (await conn.reply()).json()
    assert isinstance(got, dict)
    assert got["len"] == 11
    assert got["sha"] == hashlib.sha256(b"hello world").hexdigest()
    # Trailer fields do not leak into the headers the head hook already saw.
    await conn.send(b"PUT /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    await conn.send(b"1\r\nz\r\n0\r\nX-Trailer: sneaky\r\n\r\n")
    got = (await conn.reply()).json()
    assert isinstance(got, dict)
    assert got["len"] == 1
    assert got["headers"] == {"host": "t", "transfer-encoding": "chunked"}


async def test_content_length_over_limit_rejected_before_body(
    start_server: StartServer, connect: Connect
) -> None:
    seen: list[str] = []

    def route(request: Request) -> Response:
        seen.append(request.path)
        return Response(200)

    server = await start_server(route, body_limit=lambda r: 1000 if r.path == "/small" else 10**6)
    conn = await connect(server)
    # Only the head is sent: the answer must not wait for the body.
    await conn.send(b"PUT /small HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
    reply = await conn.reply()
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert reply.json() == {
        "error": {"code": "payload_too_large", "message": "request body exceeds 1000 bytes"}
    }
    assert await conn.at_eof()
    assert seen == []


async def test_chunked_over_limit(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(body_bytes_max=10))
    conn = await connect(server)
    await conn.send(b"PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    await conn.send(b"8\r\n12345678\r\n")
    await conn.send(b"8\r\n12345678\r\n")
    reply = await conn.reply()
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert reply.json() == {
        "error": {"code": "payload_too_large", "message": "request body exceeds 10 bytes"}
    }
    assert await conn.at_eof()
    assert server.statistics().requests_total == 0


async def test_expect_continue_accepted(start_server: StartServer, connect: Connect) -> None:
    hooked: list[bytes] = []

    def hook(request: Request) -> Response | None:
        hooked.append(request.body)
        return None

    server = await start_server(echo, head_hook=hook)
    conn = await connect(server)
    await conn.send(
        b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await conn.reply()
    assert (interim.status, interim.raw_head) == (100, b"HTTP/1.1 100 Continue\r\n\r\n")
    await conn.send(b"data")
    got = (await conn.reply()).json()
    assert isinstance(got, dict)
    assert (got["path"], got["len"]) == ("/e", 4)
    assert hooked == [b""]  # the hook saw the head only


async def test_expect_continue_rejected_by_head_hook(
    start_server: StartServer, connect: Connect
) -> None:
    handled: list[str] = []

    def hook(request: Request) -> Response | None:
        if request.headers.get("authorization") != "Bearer ok":
            return error_response(401, "unauthorized", "missing token")
        return None

    def route(request: Request) -> Response:
        handled.append(request.path)
        return Response(200)

    server = await start_server(route, head_hook=hook)
    conn = await connect(server)
    await conn.send(
        b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    reply = await conn.reply()  # no 100 Continue first
    assert reply.status == 401
    assert reply.headers["connection"] == "close"
    assert reply.json() == {"error": {"code": "unauthorized", "message": "missing token"}}
    assert await conn.at_eof()
    assert handled == []


async def test_head_hook_rejection_discards_body_sent_anyway(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(
        echo, head_hook=lambda r: error_response(404, "not_found", "no such volume")
    )
    conn = await connect(server)
    body = b"x" * 200_000
    head = f"PUT /v/9 HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    conn.writer.write(head + body)  # no drain: the server may stop reading midway
    reply = await conn.reply()
    assert reply.status == 404
    assert reply.json() == {"error": {"code": "not_found", "message": "no such volume"}}
    assert await conn.at_eof()
    assert server.statistics().responses_by_class["4xx"] == 1


# --------------------------------------------------------------------------- errors


async def test_header_too_large_431(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(header_bytes_max=1024))
    conn = await connect(server)
    await conn.send(get("/", extra=f"X-Big: {'a' * 2000}\r\n"))
    reply = await conn.reply()
    assert reply.status == 431
    assert reply.headers["connection"] == "close"
    assert reply.json() == {
        "error": {"code": "header_too_large", "message": "request header fields too large"}
    }
    assert await conn.at_eof()


async def test_header_too_large_while_one_field_still_arrives(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(echo, limits=HttpLimits(header_bytes_max=1024))
    conn = await connect(server)
    await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
    for _ in range(3):  # the field never ends; each packet is buffered by the parser
        await asyncio.sleep(0.02)
        await conn.send(b"b" * 500)
    reply = await conn.reply()
    assert reply.status == 431
    assert await conn.at_eof()


async def test_headers_just_under_limit_pass(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(header_bytes_max=1024))
    conn = await connect(server)
    await conn.send(get("/", extra=f"X-Big: {'a' * 900}\r\n"))
    assert (await conn.reply()).status == 200


async def test_malformed_request_400(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo)
    conn = await connect(server)
    await conn.send(b"GARBAGE\r\n\r\n")
    reply = await conn.reply()
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    got = reply.json()
    assert isinstance(got, dict)
    assert got["error"]["code"] == "bad_request"
    assert got["error"]["message"]  # the parser's reason
    assert await conn.at_eof()


async def test_error_after_pipelined_request_keeps_order(
    start_server: StartServer, connect: Connect
) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.05)
        return Response(200, b"first")

    server = await start_server(slow)
    conn = await connect(server)
    await conn.send(get("/1") + b"BAD REQUEST LINE\r\n\r\n")
    first = await conn.reply()
    assert (first.status, first.body, first.headers["connection"]) == (200, b"first", "keep-alive")
    second = await conn.reply()
    assert second.status == 400
    assert await conn.at_eof()


async def test_upgrade_rejected_400(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo)
    conn = await connect(server)
    await conn.send(get("/ws", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"))
    reply = await conn.reply()
    assert reply.status == 400
    assert reply.json() == {
        "error": {"code": "bad_request", "message": "protocol upgrade is not supported"}
    }
    assert await conn.at_eof()
    assert server.statistics().requests_total == 0


async def test_handler_exception_500_then_connection_still_works(
    start_server: StartServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    async def async_boom() -> Response:
        raise RuntimeError("async kaboom")

    def route(request: Request) -> Response | Awaitable[Response]:
        if request.path == "/boom":
            raise ValueError("kaboom")
        if request.path == "/async-boom":
            return async_boom()
        if request.path == "/bad-header":
            return Response(200, b"", [("X-Evil", "a\r\nSet-Cookie: x=1")])
        return Response(200, b"fine")

    server = await start_server(route)
    conn = await connect(server)
    expected = {"error": {"code": "internal", "message": "internal server error"}}
    with caplog.at_level(logging.ERROR, logger="leanhttp"):
        for path in ("/boom", "/async-boom", "/bad-header"):
            await conn.send(get(path))
            reply = await conn.reply()
            assert (reply.status, reply.json()) == (500, expected)
            assert reply.headers["connection"] == "keep-alive"
            assert "set-cookie" not in reply.headers
            await conn.send(get("/ok"))
            reply = await conn.reply()
            assert (reply.status, reply.body) == (200, b"fine")
    messages = [r for r in caplog.records if r.name == "leanhttp"]
    assert len(messages) == 3
    assert messages[0].exc_info is not None and messages[0].exc_info[0] is ValueError
    assert messages[1].exc_info is not None and messages[1].exc_info[0] is RuntimeError
    assert server.statistics().handler_errors == 3


# --------------------------------------------------------------------------- connection rules


async def test_connection_close_from_client_and_from_handler(
    start_server: StartServer, connect: Connect
) -> None:
    def route(request: Request) -> Response:
        if request.path == "/bye":
            return Response(200, b"bye", [("Connection", "close")])
        return Response(200, b"hi")

    server = await start_server(route)
    conn = await connect(server)
    await conn.send(get("/", extra="Connection: close\r\n") + get("/never"))
    reply = await conn.reply()
    assert (reply.body, reply.headers["connection"]) == (b"hi", "close")
    assert await conn.at_eof()  # the pipelined second request is not answered

    conn = await connect(server)
    await conn.send(get("/bye") + get("/never"))
    reply = await conn.reply()
    assert (reply.body, reply.headers["connection"]) == (b"bye", "close")
    assert await conn.at_eof()
    assert server.statistics().responses_by_class["2xx"] == 2


async def test_http10_keepalive_rules(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(lambda r: Response(200, r.http_version.encode()))
    conn = await connect(server)
    await conn.send(get("/", extra="Connection: keep-alive\r\n", version="1.0"))
    reply = await conn.reply()
    assert (reply.body, reply.headers["connection"]) == (b"1.0", "keep-alive")
    await conn.send(get("/", version="1.0"))
    reply = await conn.reply()
    assert (reply.body, reply.headers["connection"]) == (b"1.0", "close")
    assert await conn.at_eof()


async def test_slowloris_head_timeout_408(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(request_head_s_max=0.2))
    conn = await connect(server)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
    for _ in range(3):  # keep trickling: activity must not extend the head deadline
        await asyncio.sleep(0.05)
        await conn.send(b"X-A: b\r\n")
    reply = await conn.reply()
    elapsed = loop.time() - started
    assert reply.status == 408
    assert reply.json() == {
        "error": {"code": "request_timeout", "message": "request head too slow"}
    }
    assert 0.15 <= elapsed < 1.0
    assert await conn.at_eof()


async def test_idle_keepalive_connection_closed(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(echo, limits=HttpLimits(keepalive_idle_s_max=0.2))
    conn = await connect(server)
    await conn.send(get())
    assert (await conn.reply()).status == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await conn.at_eof(wait_s=2.0)
    assert 0.15 <= loop.time() - started < 1.0
    await asyncio.sleep(0.01)
    assert server.statistics().connections_open == 0


async def test_connections_max(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(connections_max=2))
    first, second = await connect(server), await connect(server)
    for conn in (first, second):
        await conn.send(get())
        assert (await conn.reply()).status == 200
    third = await connect(server)
    assert await third.at_eof()
    stats = server.statistics()
    assert (stats.connections_open, stats.connections_total, stats.connections_refused) == (
        2,
        2,
        1,
    )
    await first.close()
    await asyncio.sleep(0.05)
    fourth = await connect(server)
    await fourth.send(get())
    assert (await fourth.reply()).status == 200


async def test_close_grace_lets_inflight_request_finish(connect: Connect) -> None:
    started = asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        await asyncio.sleep(0.2)
        return Response(200, b"finished")

    server = LeanHTTPServer(handler)
    await server.start()
    busy, idle = await connect(server), await connect(server)
    await busy.send(get())
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(server.close(grace_s=2.0), 3)
    reply = await busy.reply()
    assert (reply.status, reply.body, reply.headers["connection"]) == (200, b"finished", "close")
    assert await busy.at_eof()
    assert await idle.at_eof()
    assert server.statistics().connections_open == 0


async def test_close_grace_expires_cancels_handler(connect: Connect) -> None:
    cancelled = asyncio.Event()

    async def handler(request: Request) -> Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(200)

    server = LeanHTTPServer(handler)
    await server.start()
    conn = await connect(server)
    await conn.send(get())
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await server.close(grace_s=0.2)
    assert 0.15 <= loop.time() - began < 1.5
    assert cancelled.is_set()
    assert await conn.at_eof()


async def test_statistics_counts(start_server: StartServer, connect: Connect) -> None:
    def route(request: Request) -> Response:
        return Response(int(request.path[1:]), b"x")

    server = await start_server(route)
    conn = await connect(server)
    for status in (200, 201, 302, 404, 404, 503):
        await conn.send(get(f"/{status}"))
        assert (await conn.reply()).status == status
    await conn.send(b"NOT HTTP\r\n\r\n")
    assert (await conn.reply()).status == 400
    assert await conn.at_eof()
    stats = server.statistics()
    assert stats.requests_total == 6
    assert stats.responses_by_class == {"2xx": 2, "3xx": 1, "4xx": 3, "5xx": 1}
    assert stats.bytes_in == conn.sent
    assert stats.bytes_out == conn.received
    assert stats.handler_errors == 0
    assert (stats.connections_total, stats.connections_refused) == (1, 0)


async def test_expect_continue_waits_for_earlier_answer(
    start_server: StartServer, connect: Connect
) -> None:
    async def slow() -> Response:
        await asyncio.sleep(0.1)
        return Response(200, b"slow")

    def route(request: Request) -> Response | Awaitable[Response]:
        return slow() if request.path == "/slow" else echo(request)

    server = await start_server(route)
    conn = await connect(server)
    await conn.send(
        get("/slow")
        + b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    first = await conn.reply()
    assert (first.status, first.body) == (200, b"slow")  # not preceded by the 100
    interim = await conn.reply()
    assert interim.status == 100
    await conn.send(b"ok")
    got = (await conn.reply()).json()
    assert isinstance(got, dict)
    assert (got["path"], got["len"]) == ("/e", 2)


async def test_head_hook_exception_is_500_and_close(
    start_server: StartServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(request: Request) -> Response | None:
        raise KeyError("hook bug")

    server = await start_server(echo, head_hook=hook)
    conn = await connect(server)
    with caplog.at_level(logging.ERROR, logger="leanhttp"):
        await conn.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
        reply = await conn.reply()
    assert reply.status == 500
    assert reply.headers["connection"] == "close"
    assert reply.json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert await conn.at_eof()
    assert server.statistics().handler_errors == 1
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


async def test_body_stall_408(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(request_head_s_max=0.15))
    conn = await connect(server)
    await conn.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n123")
    reply = await conn.reply()
    assert reply.status == 408
    assert reply.json() == {"error": {"code": "request_timeout", "message": "request body stalled"}}
    assert await conn.at_eof()


async def test_activity_keeps_connection_alive(start_server: StartServer, connect: Connect) -> None:
    limits = HttpLimits(keepalive_idle_s_max=0.12, request_head_s_max=0.12)
    server = await start_server(echo, limits=limits)
    conn = await connect(server)
    for _ in range(8):  # 0.4 s in all, longer than both limits
        await conn.send(get())
        assert (await conn.reply()).status == 200
        await asyncio.sleep(0.05)
    assert server.statistics().connections_total == 1
    assert await conn.at_eof(wait_s=1.0)  # then idle: closed


async def test_half_closed_client_still_gets_answers(
    start_server: StartServer, connect: Connect
) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.05)
        return Response(200, request.path.encode())

    server = await start_server(slow)
    conn = await connect(server)
    await conn.send(get("/a") + get("/b"))
    conn.writer.write_eof()
    first, second = await conn.reply(), await conn.reply()
    assert (first.body, first.headers["connection"]) == (b"/a", "keep-alive")
    assert (second.body, second.headers["connection"]) == (b"/b", "close")
    assert await conn.at_eof()


async def test_lingering_close_ends(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(close_linger_s_max=0.1))
    conn = await connect(server)
    await conn.send(b"BROKEN\r\n\r\n")
    assert (await conn.reply()).status == 400
    assert await conn.at_eof()  # half-closed by the server
    await conn.send(b"ignored while lingering")
    await asyncio.sleep(0.2)  # the client never closes; the server gives up lingering
    assert server.statistics().connections_open == 0


async def test_start_on_given_socket_and_invalid_handler_results(connect: Connect) -> None:
    async def not_a_response() -> object:
        return "oops"

    def route(request: Request) -> object:
        return None if request.path == "/none" else not_a_response()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = LeanHTTPServer(route)  # type: ignore[arg-type]
    await server.start(sock=sock)
    try:
        assert server.port == sock.getsockname()[1]
        conn = await connect(server)
        for path in ("/none", "/coro"):
            await conn.send(get(path))
            reply = await conn.reply()
            assert (reply.status, reply.headers["connection"]) == (500, "keep-alive")
        assert server.statistics().handler_errors == 2
    finally:
        await server.close()


def test_runs_under_uvloop() -> None:
    async def scenario() -> tuple[list[bytes], list[int]]:
        async def slow(request: Request) -> Response:
            await asyncio.sleep(0.02)
            return Response(200, b"slow")

        def route(request: Request) -> Response | Awaitable[Response]:
            return slow(request) if request.path == "/slow" else Response(200, b"fast")

        server = LeanHTTPServer(route, limits=HttpLimits(body_bytes_max=4))
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        conn = Conn(reader, writer)
        try:
            await conn.send(get("/slow") + get("/fast"))
            bodies = [(await conn.reply()).body, (await conn.reply()).body]
            await conn.send(b"PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
            statuses = [(await conn.reply()).status]
            statuses.append(int(await conn.at_eof()))
        finally:
            await conn.close()
            await server.close(grace_s=1.0)
        return bodies, statuses

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        # A bound of our own: a SIGALRM from pytest-timeout may not interrupt uvloop.
        bodies, statuses = runner.run(asyncio.wait_for(scenario(), 10))
    assert bodies == [b"slow", b"fast"]
    assert statuses == [413, 1]


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="header_bytes_max"):
        HttpLimits(header_bytes_max=0)
    with pytest.raises(ValueError, match="request_head_s_max"):
        HttpLimits(request_head_s_max=0)
    for name in (
        "body_rate_bytes_per_s_min",
        "connections_per_address_max",
        "pipeline_bytes_max",
        "body_rate_grace_s",
        "write_stall_s_max",
    ):
        with pytest.raises(ValueError, match=name):
            HttpLimits(**{name: 0})
    assert json_response(201, {"a": [1]}).body == b'{"a":[1]}'
    assert json.loads(error_response(418, "teapot", "short").body) == {
        "error": {"code": "teapot", "message": "short"}
    }


# --------------------------------------------------------------------------- slow and greedy peers


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Polls ``check`` until it holds; fails the test after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def put_head(length: int, path: str = "/up") -> bytes:
    return f"PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n".encode()


async def test_body_below_the_minimum_rate_is_408(
    start_server: StartServer, connect: Connect
) -> None:
    handled: list[Request] = []

    def handler(request: Request) -> Response:
        handled.append(request)
        return Response(200)

    # The stall bound is far away: only the rate can end this body.
    limits = HttpLimits(
        body_rate_bytes_per_s_min=1000, body_rate_grace_s=0.2, request_head_s_max=10.0
    )
    server = await start_server(handler, limits=limits)
    conn = await connect(server)
    await conn.send(put_head(10_000))

    async def trickle() -> None:  # about 200 bytes/s: a byte every few ms never stalls
        for _ in range(1000):
            await conn.send(b"x" * 10)
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        reply = await conn.reply()
    finally:
        sender.cancel()
    assert reply.status == 408
    error = reply.json()
    assert isinstance(error, dict)
    assert error["error"]["code"] == "body_too_slow"
    assert error["error"]["message"].endswith("below the minimum of 1000 bytes/s")
    assert reply.headers["connection"] == "close"
    assert await conn.at_eof()
    assert handled == []


async def test_body_above_the_minimum_rate_outlasts_the_grace(
    start_server: StartServer, connect: Connect
) -> None:
    limits = HttpLimits(body_rate_bytes_per_s_min=1000, body_rate_grace_s=0.1)
    server = await start_server(echo, limits=limits)
    conn = await connect(server)
    await conn.send(put_head(25 * 2000))
    for _ in range(25):  # 0.5 s at about 100 kB/s: five graces, a hundred times the minimum
        await conn.send(b"y" * 2000)
        await asyncio.sleep(0.02)
    reply = await conn.reply()
    assert reply.status == 200
    got = reply.json()
    assert isinstance(got, dict)
    assert got["len"] == 50_000


async def test_connections_per_address_max(start_server: StartServer, connect: Connect) -> None:
    server = await start_server(echo, limits=HttpLimits(connections_per_address_max=2))
    first, second = await connect(server), await connect(server)
    for conn in (first, second):
        await conn.send(get())
        assert (await conn.reply()).status == 200
    third = await connect(server)
    assert await third.at_eof()
    # Another address has its own count.
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, local_addr=("127.0.0.2", 0)
    )
    other = Conn(reader, writer)
    try:
        await other.send(get())
        assert (await other.reply()).status == 200
        stats = server.statistics()
        assert (stats.connections_open, stats.connections_refused) == (3, 1)
        assert stats.connections_refused_by_reason == {
            "shutdown": 0,
            "connections_max": 0,
            "connections_per_address_max": 1,
        }
        assert stats.addresses_connected == 2
    finally:
        await other.close()
    await first.close()
    await eventually(lambda: server.statistics().connections_open == 1, "the closes")
    fourth = await connect(server)
    await fourth.send(get())
    assert (await fourth.reply()).status == 200
    await second.close()
    await fourth.close()
    await eventually(lambda: server.statistics().addresses_connected == 0, "no address left")


async def test_peer_that_does_not_read_is_aborted_after_write_stall_s_max(
    start_server: StartServer, connect: Connect
) -> None:
    blob = b"z" * (64 * 1024 * 1024)
    limits = HttpLimits(write_stall_s_max=0.2, write_buffer_bytes_high=256 * 1024)
    server = await start_server(lambda r: Response(200, blob), limits=limits)
    conn = await connect(server)
    await conn.send(get())  # and never read the 64 MiB answer
    await eventually(lambda: server.statistics().connections_open == 0, "the abort")


async def test_closing_connection_whose_answer_is_not_read_is_aborted(
    start_server: StartServer, connect: Connect
) -> None:
    # The answer closes the connection; the close waits for the buffer to flush, which a
    # peer that does not read would make wait forever.
    blob = b"c" * (64 * 1024 * 1024)
    limits = HttpLimits(write_stall_s_max=0.2, write_buffer_bytes_high=256 * 1024)
    server = await start_server(
        lambda r: Response(200, blob, [("Connection", "close")]), limits=limits
    )
    conn = await connect(server)
    await conn.send(get())
    await eventually(lambda: server.statistics().connections_open == 0, "the abort")


async def test_one_answer_in_flight_while_the_peer_does_not_read(
    start_server: StartServer, connect: Connect
) -> None:
    blob = memoryview(bytes(range(256)) * (64 * 1024))  # 16 MiB: more than the kernel holds
    calls: list[str] = []

    def handler(request: Request) -> Response:
        calls.append(request.path)
        return Response(200, blob)

    limits = HttpLimits(write_buffer_bytes_high=64 * 1024)
    server = await start_server(handler, limits=limits)
    conn = await connect(server)
    await conn.send(b"".join(get(f"/{i}") for i in range(8)))
    await eventually(lambda: server.statistics().connections_reading_paused == 1, "back-pressure")
    # The other seven wait unanswered: nothing of theirs is in memory but their heads.
    assert calls == ["/0"]
    assert server.statistics().bytes_out < len(blob) + 1024
    for _ in range(8):
        assert (await conn.reply()).body == blob
    assert calls == [f"/{i}" for i in range(8)]


async def test_pipelined_bodies_behind_a_pending_handler_are_bounded(
    start_server: StartServer, connect: Connect
) -> None:
    release = asyncio.Event()

    async def blocked(request: Request) -> Response:
        await release.wait()
        return echo(request)

    def route(request: Request) -> Response | Awaitable[Response]:
        return blocked(request) if request.path == "/block" else echo(request)

    body_size = 512 * 1024
    pipeline_bytes_max = 1024 * 1024
    limits = HttpLimits(body_bytes_max=body_size, pipeline_bytes_max=pipeline_bytes_max)
    server = await start_server(route, limits=limits)
    conn = await connect(server)
    bodies = [bytes([i]) * body_size for i in range(20)]
    stream = get("/block") + b"".join(
        put_head(body_size, f"/{i}") + b for i, b in enumerate(bodies)
    )
    sender = asyncio.create_task(conn.send(stream))  # 10 MiB; drains only as the server reads
    try:
        await eventually(
            lambda: server.statistics().connections_reading_paused == 1, "the server to stop"
        )
        # Two queued bodies fill the budget; the third is held after at most one read.
        one_read = 256 * 1024
        assert server.statistics().bytes_in <= pipeline_bytes_max + one_read + 4096
        assert not sender.done()
        release.set()
        assert (await conn.reply()).status == 200
        for i, body in enumerate(bodies):
            got = (await conn.reply()).json()
            assert isinstance(got, dict)
            assert (got["path"], got["len"]) == (f"/{i}", body_size)
            assert got["sha"] == hashlib.sha256(body).hexdigest()
        await sender
    finally:
        release.set()
        sender.cancel()
    assert server.statistics().requests_total == 21


# --------------------------------------------------------------------------- query strings


@given(st.text(alphabet="ab=&%+2Fé ;", max_size=40))
@example("offset=1024&length=102400&checked=1&expires=1765100000&ticket=AbCd-_9w")
@example("a=1&a=2&&b&=c&d==e")
@example("a=%2F+b&c=%zz")
def test_parse_query_answers_what_parse_qsl_answers(query: str) -> None:
    assert parse_query(query) == dict(parse_qsl(query, keep_blank_values=True))


# --------------------------------------------------------------------------- the fast path


class FastPing:
    """A fast path that answers the exact bytes of "GET /ping" and records what it saw."""

    def __init__(self, *, fail: bool = False) -> None:
        self.seen: list[bytes] = []
        self.fail = fail
        self.called = asyncio.Event()

    def __call__(self, data: bytes, date: bytes) -> tuple[int, bytes, bytes, int, bool] | None:
        self.seen.append(data)
        self.called.set()
        if self.fail:
            raise RuntimeError("fast path bug")
        if data != get("/ping"):
            return None
        body = b"pong"
        head = b"HTTP/1.1 200 OK\r\n%sContent-Length: 4\r\nConnection: keep-alive\r\n\r\n" % date
        return 200, head, body, len(head) + len(body), False


async def test_fast_path_answers_whole_reads_and_declines_the_rest(
    start_server: StartServer, connect: Connect
) -> None:
    fast = FastPing()
    server = await start_server(echo, fast=fast)
    conn = await connect(server)
    await conn.send(get("/ping"))
    reply = await conn.reply()
    assert (reply.status, reply.body) == (200, b"pong")
    await conn.send(get("/other"))  # declined: the parser and the handler answer it
    reply = await conn.reply()
    assert reply.status == 200 and reply.json()["path"] == "/other"  # type: ignore[index]
    stats = server.statistics()
    assert (stats.requests_total, stats.requests_fast) == (2, 1)
    assert stats.responses_by_class["2xx"] == 2
    assert stats.bytes_out == conn.received


async def test_fast_path_is_not_offered_a_message_already_begun(
    start_server: StartServer, connect: Connect
) -> None:
    fast = FastPing()
    server = await start_server(echo, fast=fast)
    conn = await connect(server)
    whole = get("/ping")
    await conn.send(whole[:10])
    await asyncio.wait_for(fast.called.wait(), 5)  # the first piece was read on its own
    await conn.send(whole[10:])
    reply = await conn.reply()
    assert reply.json()["path"] == "/ping"  # type: ignore[index]  # the handler's answer
    assert fast.seen == [whole[:10]]
    assert server.statistics().requests_fast == 0


async def test_a_failing_fast_path_falls_back_to_the_parser(
    start_server: StartServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(echo, fast=FastPing(fail=True))
    conn = await connect(server)
    with caplog.at_level(logging.ERROR, logger="leanhttp"):
        await conn.send(get("/ping"))
        reply = await conn.reply()
    assert reply.json()["path"] == "/ping"  # type: ignore[index]
    assert "fast path failed" in caplog.text
    assert server.statistics().requests_fast == 0
