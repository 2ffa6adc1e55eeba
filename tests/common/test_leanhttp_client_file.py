"""LeanHTTPClient request bodies streamed from a file (``body_file``): byte-exact arrival,
bounded memory and write buffer, early answers, a server that closes mid-body, the retry of
a stale connection. The 100 MiB body goes to a LeanHTTPServer in its own process, so that
the memory measured is the client's alone."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from common.leanhttp import (
    FileBody,
    HttpConnectError,
    HttpLimits,
    LeanHTTPClient,
    LeanHTTPServer,
    Request,
    Response,
    json_response,
)
from common.leanhttp.client import FILE_CHUNK_BYTES, WRITE_BUFFER_BYTES_HIGH

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
LARGE_BYTES = 100 * MiB

# A lean server answering every request with the length and sha256 of its body; it prints
# its port and stops when its stdin closes.
_DIGEST_SERVER = """
import asyncio, hashlib, sys
from common.leanhttp import HttpLimits, LeanHTTPServer, json_response

async def digest(req):
    body = req.body
    sha = await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
    return json_response(200, {"len": len(body), "sha": sha})

async def main():
    server = LeanHTTPServer(digest, limits=HttpLimits(body_bytes_max=int(sys.argv[1])))
    await server.start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.close()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 100 MiB file of pseudo-random bytes and its sha256, written 1 MiB at a time."""
    path = tmp_path_factory.mktemp("body") / "large.bin"
    rng = random.Random(7)
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(LARGE_BYTES // MiB):
            piece = rng.randbytes(MiB)
            sha.update(piece)
            f.write(piece)
    return path, sha.hexdigest()


@pytest.fixture(scope="module")
def digest_server() -> Iterator[str]:
    """The URL of a digest server in its own process."""
    with subprocess.Popen(
        [sys.executable, "-c", _DIGEST_SERVER, str(128 * MiB)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            port = int(proc.stdout.readline())
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.stdin.close()  # the server stops
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _put_large_measured(url: str, path: Path) -> tuple[dict[str, object], int]:
    """PUTs the large file; the answer and the peak of memory traced during the request."""
    client = LeanHTTPClient(connect_timeout_s=2.0)
    try:
        tracemalloc.start()
        try:
            resp = await client.request(
                "PUT", url + "/large", body_file=FileBody(path, 0, LARGE_BYTES), timeout_s=50
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert resp.status == 200
        stats = client.statistics()
        assert stats.file_body_buffered_bytes_max <= WRITE_BUFFER_BYTES_HIGH + FILE_CHUNK_BYTES
        return json.loads(resp.body), peak
    finally:
        await client.close()


async def test_100_mib_body_arrives_byte_exact_in_bounded_memory(
    digest_server: str, large_file: tuple[Path, str]
) -> None:
    path, sha = large_file
    answer, peak = await _put_large_measured(digest_server, path)
    assert answer == {"len": LARGE_BYTES, "sha": sha}
    # The buffer bound plus a chunk being read and one being copied; far below the body.
    assert peak < 8 * MiB, f"client traced {peak} bytes at peak"


def test_100_mib_body_under_uvloop(digest_server: str, large_file: tuple[Path, str]) -> None:
    path, sha = large_file
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        # A bound of our own: a SIGALRM from pytest-timeout may not interrupt uvloop.
        answer, peak = runner.run(asyncio.wait_for(_put_large_measured(digest_server, path), 50))
    assert answer == {"len": LARGE_BYTES, "sha": sha}
    assert peak < 8 * MiB, f"client traced {peak} bytes at peak"


# --------------------------------------------------------------------------- in-process servers


@pytest.fixture
async def client() -> AsyncIterator[LeanHTTPClient]:
    c = LeanHTTPClient(connect_timeout_s=1.0)
    yield c
    await c.close()


def _digest(req: Request) -> Response:
    return json_response(200, {"len": len(req.body), "sha": hashlib.sha256(req.body).hexdigest()})


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


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(handler: RawHandler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()
    for task in handlers:
        task.cancel()


def _write_file(path: Path, size: int, seed: int = 1) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, length


async def test_write_buffer_stays_bounded_against_a_slow_reader(
    client: LeanHTTPClient, raw: Callable[[RawHandler], Awaitable[str]], tmp_path: Path
) -> None:
    data = _write_file(tmp_path / "body", 16 * MiB)

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, length = await _read_request(reader)
        sha = hashlib.sha256()
        got = 0
        while got < length:
            piece = await reader.read(64 * 1024)
            if not piece:
                return
            sha.update(piece)
            got += len(piece)
            await asyncio.sleep(0.002)  # reads far slower than the client could write
        answer = json.dumps({"len": got, "sha": sha.hexdigest()}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()

    url = await raw(slow)
    resp = await client.request(
        "PUT", url + "/slow", body_file=FileBody(tmp_path / "body", 0, len(data)), timeout_s=50
    )
    assert json.loads(resp.body) == {"len": len(data), "sha": hashlib.sha256(data).hexdigest()}
    buffered = client.statistics().file_body_buffered_bytes_max
    # The reader was slow enough to fill the buffer past its mark, never further than a chunk.
    assert WRITE_BUFFER_BYTES_HIGH < buffered <= WRITE_BUFFER_BYTES_HIGH + FILE_CHUNK_BYTES


async def test_a_range_of_a_shared_descriptor(
    client: LeanHTTPClient,
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
    tmp_path: Path,
) -> None:
    data = _write_file(tmp_path / "body", 3 * FILE_CHUNK_BYTES + 17)
    _srv, url = await lean(_digest)
    fd = os.open(tmp_path / "body", os.O_RDONLY)
    try:
        ranges = [(0, len(data)), (1000, 5000), (FILE_CHUNK_BYTES - 1, FILE_CHUNK_BYTES + 2)]
        answers = await asyncio.gather(
            *(
                client.request("PUT", f"{url}/{i}", body_file=FileBody(fd, off, n))
                for i, (off, n) in enumerate(ranges)
            )
        )
    finally:
        os.close(fd)
    for (off, n), resp in zip(ranges, answers, strict=True):
        want = data[off : off + n]
        assert json.loads(resp.body) == {"len": n, "sha": hashlib.sha256(want).hexdigest()}
    # An empty range is an empty body with its Content-Length.
    resp = await client.request("PUT", url + "/empty", body_file=FileBody(tmp_path / "body", 5, 0))
    assert json.loads(resp.body)["len"] == 0


async def test_a_file_shorter_than_announced_is_an_oserror(
    client: LeanHTTPClient,
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
    tmp_path: Path,
) -> None:
    data = _write_file(tmp_path / "body", 1000)
    srv, url = await lean(_digest, request_head_s_max=0.5)
    with pytest.raises(OSError, match="ended at byte 1000"):
        await client.request("PUT", url + "/short", body_file=FileBody(tmp_path / "body", 0, 2000))
    opened = client.statistics().connections_opened
    with pytest.raises(FileNotFoundError):  # before anything is sent
        await client.request("PUT", url + "/x", body_file=FileBody(tmp_path / "absent", 0, 1))
    assert client.statistics().connections_opened == opened
    with pytest.raises(ValueError, match="body_file"):
        await client.request("PUT", url + "/x", body=b"x", body_file=FileBody(0, 0, 1))
    # The half-sent request's connection was dropped; the next request is whole.
    resp = await client.request(
        "PUT", url + "/next", body_file=FileBody(tmp_path / "body", 0, 1000)
    )
    assert json.loads(resp.body) == {"len": 1000, "sha": hashlib.sha256(data).hexdigest()}
    assert srv.statistics().requests_total == 1


async def test_an_early_answer_stops_the_body(
    client: LeanHTTPClient,
    lean: Callable[..., Awaitable[tuple[LeanHTTPServer, str]]],
    tmp_path: Path,
) -> None:
    _write_file(tmp_path / "body", 32 * MiB)
    srv, url = await lean(_digest, body_bytes_max=MiB)
    resp = await client.request(
        "PUT", url + "/big", body_file=FileBody(tmp_path / "body", 0, 32 * MiB)
    )
    assert resp.status == 413  # answered from the head, before the body
    assert client.statistics().connections_idle == 0  # that stream is not reused
    assert srv.statistics().bytes_in < 32 * MiB


async def test_a_server_closing_mid_body_is_an_error_not_a_hang(
    client: LeanHTTPClient, raw: Callable[[RawHandler], Awaitable[str]], tmp_path: Path
) -> None:
    _write_file(tmp_path / "body", 32 * MiB)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.readexactly(100_000)
        writer.transport.abort()

    url = await raw(cut)
    with pytest.raises(HttpConnectError, match="closed the connection"):
        await client.request(
            "PUT", url + "/cut", body_file=FileBody(tmp_path / "body", 0, 32 * MiB), timeout_s=30
        )
    assert client.statistics().connections_open == 0


async def test_a_stale_connection_is_retried_from_the_start_of_the_file(
    client: LeanHTTPClient, raw: Callable[[RawHandler], Awaitable[str]], tmp_path: Path
) -> None:
    data = _write_file(tmp_path / "body", 2 * MiB)
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await _read_request(reader)  # the PUT on the reused connection: closed unanswered
            writer.transport.abort()
            return
        _, length = await _read_request(reader)
        body = await reader.readexactly(length)
        answer = json.dumps({"len": len(body), "sha": hashlib.sha256(body).hexdigest()}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()

    url = await raw(handler)
    assert (await client.request("GET", url + "/warm")).body == b"ok"
    resp = await client.request(
        "PUT", url + "/put", body_file=FileBody(tmp_path / "body", 10, len(data) - 10)
    )
    want = data[10:]
    assert json.loads(resp.body) == {"len": len(want), "sha": hashlib.sha256(want).hexdigest()}
    assert connections == 2
