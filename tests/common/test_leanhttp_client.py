"""Tests for common.leanhttp.client over real sockets on 127.0.0.1: the real LeanHTTPServer,
an aiohttp server (chunked and streamed answers), and raw asyncio servers where the exact
bytes or the exact moment of a close matter."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from common.leanhttp import (
    HttpClientError,
    HttpConnectError,
    HttpLimits,
    HttpProtocolError,
    HttpResponseTooLarge,
    HttpTimeoutError,
    LeanHTTPClient,
    LeanHTTPServer,
    Request,
    Response,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def client() -> AsyncIterator[LeanHTTPClient]:
    c = LeanHTTPClient(response_bytes_max=1 << 20, connect_timeout_s=1.0)
    yield c
    await c.close()


@pytest.fixture
async def lean() -> AsyncIterator[Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]]:
    servers: list[LeanHTTPServer] = []

    async def start(handler: object, **limits: object) -> tuple[LeanHTTPServer, str]:
        srv = LeanHTTPServer(handler, limits=HttpLimits(**limits))  # type: ignore[arg-type]
        await srv.start("127.0.0.1", 0)
        servers.append(srv)
        return srv, f"http://127.0.0.1:{srv.port}"

    yield start
    for srv in servers:
        await srv.close(grace_s=0.1)


@pytest.fixture
async def aio() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> str:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def echo(req: Request) -> Response:
    return Response(
        200,
        f"{req.method} {req.path}?{req.query} {len(req.body)}".encode(),
        (("X-Seen-Host", req.headers.get("host", "")), ("X-Twice", "a"), ("X-Twice", "b")),
        "text/plain",
    )


# --------------------------------------------------------------------------- lean server


async def test_keepalive_reuses_one_connection(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    srv, url = await lean(echo)
    for i in range(10):
        resp = await client.request("GET", f"{url}/p/{i}?q=1")
        assert resp.status == 200
        assert resp.body == f"GET /p/{i}?q=1 0".encode()
        assert resp.headers["content-type"] == "text/plain"
        assert resp.headers["x-seen-host"] == url[7:]
        assert resp.headers["x-twice"] == "a, b"
    assert srv.statistics().connections_total == 1
    st = client.statistics()
    assert (st.requests_total, st.connections_opened, st.connections_reused) == (10, 1, 9)
    assert st.connections_idle == 1


async def test_bodies_head_and_bodiless_statuses(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    def handler(req: Request) -> Response:
        if req.path == "/204":
            return Response(204)
        if req.path == "/304":
            return Response(304, headers=(("ETag", '"x"'),))
        return Response(200, req.body or b"hello")

    srv, url = await lean(handler)
    payload = os.urandom(300_000)
    resp = await client.request("PUT", f"{url}/echo", body=payload)
    assert resp.body == payload
    resp = await client.request("POST", f"{url}/empty")  # Content-Length: 0 is sent
    assert resp.body == b"hello"
    resp = await client.request("HEAD", f"{url}/x")
    assert (resp.status, resp.body, resp.headers["content-length"]) == (200, b"", "5")
    assert (await client.request("GET", f"{url}/204")).status == 204
    resp = await client.request("GET", f"{url}/304")
    assert (resp.status, resp.body, resp.headers["etag"]) == (304, b"", '"x"')
    assert (await client.request("GET", f"{url}/after")).body == b"hello"
    assert srv.statistics().connections_total == 1  # every answer left the stream clean


async def test_server_closing_the_connection(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    def handler(req: Request) -> Response:
        return Response(200, b"bye", (("Connection", "close"),))

    srv, url = await lean(handler)
    for _ in range(3):
        assert (await client.request("GET", url + "/")).body == b"bye"
    assert srv.statistics().connections_total == 3
    assert client.statistics().connections_idle == 0


async def test_idle_connection_closed_by_server_is_not_reused(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    srv, url = await lean(echo, keepalive_idle_s_max=0.1)
    await client.request("GET", url + "/a")
    await asyncio.sleep(0.4)  # the server closes the idle connection
    assert client.statistics().connections_idle == 0
    assert (await client.request("GET", url + "/b")).status == 200
    assert srv.statistics().connections_total == 2


async def test_timeout_closes_the_connection(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    async def slow(req: Request) -> Response:
        await asyncio.sleep(0.5 if req.path == "/slow" else 0)
        return Response(200, b"late")

    _srv, url = await lean(slow)
    with pytest.raises(HttpTimeoutError) as info:
        await client.request("GET", url + "/slow", timeout_s=0.05)
    assert info.value.url == url + "/slow"
    await asyncio.sleep(0.01)
    assert client.statistics().connections_open == 0
    assert (await client.request("GET", url + "/fast")).body == b"late"
    assert client.statistics().errors_by_kind == {"HttpTimeoutError": 1}


async def test_deadline_of_a_later_request_on_a_reused_connection(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    # The connection's one timer is armed for the first request's deadline; it must still
    # time out a later request whose deadline is earlier, and spare one that is later.
    async def slow(req: Request) -> Response:
        await asyncio.sleep(float(req.query or 0))
        return Response(200, b"ok")

    srv, url = await lean(slow)
    assert (await client.request("GET", url + "/", timeout_s=5.0)).status == 200
    with pytest.raises(HttpTimeoutError):
        await client.request("GET", url + "/?0.5", timeout_s=0.05)
    for _ in range(3):
        assert (await client.request("GET", url + "/?0.04", timeout_s=0.2)).status == 200
    assert srv.statistics().connections_total == 2  # the timed-out one was closed


async def test_idle_connection_closed_after_idle_s_max(
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
) -> None:
    srv, url = await lean(lambda req: Response(200, b"ok"))
    client = LeanHTTPClient(idle_s_max=0.1)
    try:
        # A request's (long) deadline does not keep the parked connection open.
        assert (await client.request("GET", url, timeout_s=30.0)).status == 200
        assert client.statistics().connections_idle == 1
        await asyncio.sleep(0.3)
        st = client.statistics()
        assert (st.connections_idle, st.connections_open) == (0, 0)
        assert (await client.request("GET", url)).status == 200
        assert srv.statistics().connections_total == 2
    finally:
        await client.close()


async def test_concurrent_requests_respect_connections_per_origin_max(
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
) -> None:
    async def handler(req: Request) -> Response:
        await asyncio.sleep(0.005)
        return Response(200, req.path.encode())

    srv, url = await lean(handler)
    client = LeanHTTPClient(connections_per_origin_max=4)
    try:
        answers = await asyncio.gather(*(client.request("GET", f"{url}/{i}") for i in range(200)))
        assert [a.body for a in answers] == [f"/{i}".encode() for i in range(200)]
        assert srv.statistics().connections_total == 4
        # Waiting for a free connection counts against the request's timeout.
        results = await asyncio.gather(
            *(client.request("GET", f"{url}/w", timeout_s=0.02) for i in range(40)),
            return_exceptions=True,
        )
        assert any(isinstance(r, HttpTimeoutError) for r in results)
        assert all(isinstance(r, HttpTimeoutError) or r.status == 200 for r in results)  # type: ignore[union-attr]
        ok = await client.request("GET", f"{url}/again")  # the pool recovered its slots
        assert ok.status == 200
        assert client.statistics().connections_open <= 4
    finally:
        await client.close()


async def test_body_over_limit_aborts(
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
) -> None:
    _srv, url = await lean(lambda req: Response(200, b"x" * int(req.path[1:])))
    client = LeanHTTPClient(response_bytes_max=1000)
    try:
        assert len((await client.request("GET", f"{url}/1000")).body) == 1000
        with pytest.raises(HttpResponseTooLarge, match="response_bytes_max"):
            await client.request("GET", f"{url}/1001")
        assert (await client.request("GET", f"{url}/10")).status == 200
        head = await client.request("HEAD", f"{url}/5000")  # HEAD has no body to limit
        assert (head.status, head.headers["content-length"]) == (200, "5000")
    finally:
        await client.close()


async def test_connect_refused(client: LeanHTTPClient) -> None:
    with pytest.raises(HttpConnectError):
        await client.request("GET", "http://127.0.0.1:9/x")
    assert client.statistics().connections_open == 0


async def test_bad_input_is_value_error(client: LeanHTTPClient) -> None:
    with pytest.raises(ValueError):
        await client.request("GET", "https://example.com/")
    with pytest.raises(ValueError):
        await client.request("GET", "http://127.0.0.1:1/", headers=(("X-A", "b\r\nX-B: c"),))
    with pytest.raises(ValueError):
        await client.request("GET", "http://:80/")


# --------------------------------------------------------------------------- aiohttp server


async def test_chunked_and_close_delimited_from_aiohttp(
    client: LeanHTTPClient, aio: Callable[[web.Application], Awaitable[str]]
) -> None:
    parts = [os.urandom(n) for n in (1, 5000, 70_000, 3)]

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for p in parts:
            await resp.write(p)
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(40):
            await resp.write(b"y" * 50_000)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/big", big)

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=b"plain")

    app.router.add_get("/plain", plain)
    url = await aio(app)
    for _ in range(2):
        resp = await client.request("GET", url + "/chunked")
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.body == b"".join(parts)
    assert (await client.request("GET", url + "/plain")).body == b"plain"
    assert client.statistics().connections_opened == 1
    with pytest.raises(HttpResponseTooLarge):  # 2 MB chunked over the 1 MiB limit
        await client.request("GET", url + "/big")
    assert (await client.request("GET", url + "/plain")).body == b"plain"


# --------------------------------------------------------------------------- raw servers


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_close_delimited_body(
    client: LeanHTTPClient, raw: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    url = await raw(handler)
    resp = await client.request("GET", url + "/")
    assert (resp.status, resp.body, resp.headers["x-a"]) == (200, b"until the end", "1")
    await asyncio.sleep(0.01)
    assert client.statistics().connections_open == 0


async def test_stale_reused_connection_is_retried_once(
    client: LeanHTTPClient, raw: Callable[[RawHandler], Awaitable[str]]
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_head(reader)  # the second request on this connection: close unanswered
        writer.close()

    url = await raw(handler)
    assert (await client.request("GET", url + "/1")).body == b"ok"
    assert (await client.request("GET", url + "/2")).body == b"ok"
    assert connections == 2
    with pytest.raises(HttpConnectError, match="without answering"):
        await client.request("POST", url + "/3")  # not idempotent: no retry


async def test_broken_and_malformed_responses(
    client: LeanHTTPClient, raw: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if b"/garbage" in head:
            writer.write(b"HTTP/1.1 abc\r\n\r\n")
        elif b"/short" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        elif b"/huge-head" in head:
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 70_000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    url = await raw(handler)
    with pytest.raises(HttpProtocolError):
        await client.request("GET", url + "/garbage")
    with pytest.raises(HttpProtocolError, match="mid-response"):
        await client.request("GET", url + "/short")
    with pytest.raises(HttpResponseTooLarge):
        await client.request("GET", url + "/huge-head")
    for kind in ("HttpProtocolError", "HttpResponseTooLarge"):
        assert kind in client.statistics().errors_by_kind


async def test_close_fails_later_requests(client: LeanHTTPClient) -> None:
    await client.close()
    with pytest.raises(HttpClientError, match="closed"):
        await client.request("GET", "http://127.0.0.1:9/")


async def test_cancelled_caller_frees_its_connection(
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
) -> None:
    async def slow(req: Request) -> Response:
        await asyncio.sleep(0.3 if req.path == "/slow" else 0)
        return Response(200, b"ok")

    _srv, url = await lean(slow)
    client = LeanHTTPClient(connections_per_origin_max=1)
    try:
        task = asyncio.ensure_future(client.request("GET", url + "/slow"))
        waiter = asyncio.ensure_future(client.request("GET", url + "/next"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await waiter).body == b"ok"  # the slot passed on to the waiting request
        assert client.statistics().connections_open == 1
    finally:
        await client.close()


# --------------------------------------------------------------------------- request_each


async def test_request_each_answers_every_origin_in_order_and_reuses_connections(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    servers = [await lean(echo) for _ in range(3)]
    urls = [f"{url}/n/1/2" for _, url in servers]
    for _ in range(3):
        answers = await client.request_each(
            "PUT", urls, headers=(("X-A", "1"),), body=b"x" * 1000, timeout_s=5.0
        )
        for (_, url), answer in zip(servers, answers, strict=True):
            assert not isinstance(answer, HttpClientError)
            assert answer.status == 200
            assert answer.body == b"PUT /n/1/2? 1000"
            assert answer.headers["x-seen-host"] == url[7:]
    # The first call opened one connection per origin; the later ones took them idle.
    st = client.statistics()
    assert (st.requests_total, st.connections_opened, st.connections_reused) == (9, 3, 6)
    assert [srv.statistics().connections_total for srv, _ in servers] == [1, 1, 1]


async def test_request_each_returns_each_failure_in_its_slot(
    client: LeanHTTPClient,
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
    raw: Callable[[RawHandler], Awaitable[str]],
) -> None:
    answered = 0

    async def garbage_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        while True:
            head = await read_head(reader)
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
            if answered:
                writer.write(b"HTTP/1.1 abc\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            answered += 1
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    _, good = await lean(echo)
    bad = await raw(garbage_after_one)
    refused = "http://127.0.0.1:9"
    first = await client.request_each("PUT", [good + "/a", bad + "/a"], body=b"1")
    assert [getattr(a, "status", None) for a in first] == [200, 201]
    # On reused connections (bad) and a new one (refused) alike: a failure stays in its slot.
    answers = await client.request_each("PUT", [bad + "/b", refused + "/b", good + "/b"], body=b"2")
    assert isinstance(answers[0], HttpProtocolError)
    assert isinstance(answers[1], HttpConnectError)
    assert not isinstance(answers[2], HttpClientError) and answers[2].status == 200
    assert client.statistics().errors_by_kind["HttpProtocolError"] == 1


async def test_request_each_cancelled_aborts_every_connection_in_use(
    client: LeanHTTPClient, lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]]
) -> None:
    async def slow(req: Request) -> Response:
        await asyncio.sleep(5 if req.path == "/slow" else 0)
        return Response(200, b"ok")

    urls = [url for _, url in [await lean(slow) for _ in range(2)]]
    await client.request_each("GET", [u + "/fast" for u in urls])  # connections now idle
    task = asyncio.ensure_future(client.request_each("GET", [u + "/slow" for u in urls]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    st = client.statistics()
    assert (st.connections_open, st.connections_idle) == (0, 0)
