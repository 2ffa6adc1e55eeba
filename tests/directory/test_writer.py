"""BlobWriter's replica PUTs and failure handling against scripted servers on 127.0.0.1: a
directory that serves a writable list (which a test may change) and records every call, and
store nodes that answer 201, answer an error, never answer, or are not there. (The same
paths against real store nodes and a real directory are in test_directory_functional.py and
test_writer_failover.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import xxhash
from aiohttp import web

from common.credentials import Purpose
from directory.writer import BlobWriter, NoWritableVolume
from tests.conftest import creds

SECRET = b"writer-tests-secret-0123456789"


@dataclass
class FakeStore:
    """`behaviour`: "ok" (201 with the store's answer), "error" (507 with a JSON error),
    "silent" (never answers)."""

    node_id: str
    behaviour: str = "ok"
    url: str = ""
    puts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.puts.append((request.path, dict(request.headers), body))
        self.arrived.set()
        if self.behaviour == "silent":
            await asyncio.sleep(3600)
        if self.behaviour == "error":
            doc = {"error": {"code": "no_space", "message": "the disk is full"}}
            return web.json_response(doc, status=507)
        _, _, vid, key, alt, _ = request.path.split("/")
        answer = {
            "volume_id": int(vid),
            "key": key,
            "alt_key": int(alt),
            "size": len(body),
            "etag": f'"{xxhash.xxh3_64_intdigest(body):016x}"',
        }
        return web.json_response(answer, status=201)


# What a RawStore answers after reading a whole request, by behaviour.
_RAW_ANSWERS = {
    # Not HTTP at all.
    "garbage": b"this is not an HTTP answer\r\n\r\n",
    # A head announcing more body than ever comes: the connection closes mid-answer.
    "truncated": b'HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{"etag": ',
    # Well-formed, but not the 201 a stored needle answers.
    "wrong_status": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
}


@dataclass
class RawStore:
    """A store node at the byte level: records each request exactly as it arrived (head and
    body) and answers like the store, except that after its first `ok_first` answers a
    `behaviour` other than "ok" answers with one of _RAW_ANSWERS and closes."""

    node_id: str
    behaviour: str = "ok"
    ok_first: int = 0
    url: str = ""
    requests: list[bytes] = field(default_factory=list)

    async def start(self, stack: contextlib.AsyncExitStack) -> str:
        server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return self.url

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if self.behaviour != "ok" and len(self.requests) > self.ok_first:
                    writer.write(_RAW_ANSWERS[self.behaviour])
                    await writer.drain()
                    return
                answer = json.dumps(
                    {"etag": f'"{xxhash.xxh3_64_intdigest(body):016x}"', "size": len(body)}
                ).encode()
                writer.write(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        finally:
            writer.close()


@dataclass
class FakeDirectory:
    volumes: list[dict[str, Any]]
    url: str = ""
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.calls.append((request.method, request.path, body))
        self.called.set()
        if request.path == "/writable":
            return web.json_response({"volumes": self.volumes, "alerts": []})
        if request.path == "/deletes":
            return web.json_response({"replicas_done": 0, "replicas_pending": 3})
        return web.json_response({})  # /volumes/{vid}/readonly

    def of(self, method: str, path: str) -> list[Any]:
        return [b for m, p, b in self.calls if (m, p) == (method, path)]


async def _serve(app: web.Application, stack: contextlib.AsyncExitStack) -> str:
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


def _unused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed: connections are refused


@contextlib.asynccontextmanager
async def scripted(
    layout: dict[int, list[FakeStore | str]] | dict[int, list[FakeStore | RawStore | str]],
) -> AsyncIterator[FakeDirectory]:
    """A directory listing volume id -> replicas (a FakeStore or RawStore; "absent": a port
    with nothing behind it; "absent:<name>": node <name>, absent, wherever it is named),
    with every FakeStore and RawStore serving."""
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for replicas in layout.values():
            for r in replicas:
                if isinstance(r, FakeStore) and r.node_id not in urls:
                    app = web.Application(client_max_size=64 * 1024 * 1024)
                    app.router.add_put("/n/{tail:.*}", r.handle)
                    r.url = urls[r.node_id] = await _serve(app, stack)
                elif isinstance(r, RawStore) and r.node_id not in urls:
                    urls[r.node_id] = await r.start(stack)
                elif isinstance(r, str) and r.startswith("absent:") and r not in urls:
                    urls[r] = _unused_url()

        def replica(vid: int, i: int, r: FakeStore | RawStore | str) -> tuple[str, str]:
            if isinstance(r, FakeStore | RawStore):
                return r.url, r.node_id
            if r in urls:
                return urls[r], r.partition(":")[2]
            return _unused_url(), f"absent-{vid}-{i}"

        volumes = []
        for vid, reps in layout.items():
            placed = [replica(vid, i, r) for i, r in enumerate(reps)]
            volumes.append(
                {
                    "volume_id": vid,
                    "replicas": [url for url, _ in placed],
                    "node_ids": [node_id for _, node_id in placed],
                }
            )
        directory = FakeDirectory(volumes)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", directory.handle)
        directory.url = await _serve(app, stack)
        yield directory


async def test_every_replica_gets_the_same_checksum_credential_and_body() -> None:
    stores = [FakeStore("a"), FakeStore("b"), FakeStore("c")]
    data = b"twenty kibibytes, more or less" * 700
    async with (
        scripted({1: list(stores)}) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET)) as writer,
    ):
        ref = await writer.put(42, 7, data, cookie=0xABC)
        assert (ref.volume_id, ref.key, ref.alt_key, ref.cookie, ref.size) == (
            1,
            42,
            7,
            0xABC,
            len(data),
        )
        assert ref.etag == f'"{xxhash.xxh3_64_intdigest(data):016x}"'
        for s in stores:
            ((path, headers, body),) = s.puts
            assert path == "/n/1/42/7/0000000000000abc"
            assert body == data
            assert headers["X-Pinhole-Checksum"] == f"{xxhash.xxh3_64_intdigest(data):016x}"
            assert headers["Authorization"] == creds(SECRET).header(Purpose.WRITE)
        assert directory.calls == [("GET", "/writable", None)]


def _without_host(request: bytes) -> bytes:
    return b"\r\n".join(line for line in request.split(b"\r\n") if not line.startswith(b"Host:"))


async def test_every_replica_receives_the_same_bytes_but_for_its_host_line() -> None:
    stores = [RawStore("a"), RawStore("b"), RawStore("c")]
    data = os.urandom(20 * 1024)
    async with (
        scripted({1: list(stores)}) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET)) as writer,
    ):
        # The first put opens the connections, the second reuses them (request_each's
        # one-head, back-to-back path).
        for key in (1, 2):
            ref = await writer.put(key, 7, data, cookie=0xABC)
            assert ref.etag == f'"{xxhash.xxh3_64_intdigest(data):016x}"'
    for key, position in ((1, 0), (2, 1)):
        received = [s.requests[position] for s in stores]
        assert all(r.endswith(b"\r\n\r\n" + data) for r in received)
        assert received[0].startswith(b"PUT /n/1/%d/7/0000000000000abc HTTP/1.1\r\n" % key)
        assert len({_without_host(r) for r in received}) == 1
        # Each names its own origin in Host.
        hosts = {s.url.removeprefix("http://") for s in stores}
        assert {r.split(b"\r\n")[1].decode().removeprefix("Host: ") for r in received} == hosts


@pytest.mark.parametrize(
    ("bad", "reason"),
    [("garbage", "unreachable"), ("truncated", "unreachable"), ("wrong_status", "http_error")],
)
async def test_a_corrupt_replica_answer_fails_the_put_on_that_volume(bad: str, reason: str) -> None:
    layout: dict[int, list[FakeStore | RawStore | str]] = {
        # The bad node answers one put well: the failing put reuses every connection.
        1: [RawStore("a"), RawStore("bad", bad, ok_first=1), RawStore("b")],
        2: [RawStore("c"), RawStore("d"), RawStore("e")],
    }
    async with (
        scripted(layout) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET), replica_timeout_s=2.0) as writer,
    ):
        assert (await writer.put(4, 1, b"first", volume_id=1)).volume_id == 1
        ref = await writer.put(5, 1, b"second", volume_id=1)
        assert ref.volume_id == 2
        assert directory.of("POST", "/volumes/1/readonly") == [{"reason": reason, "node_id": "bad"}]
        # The two good replicas took the write: its delete is queued.
        assert directory.of("POST", "/deletes") == [{"volume_id": 1, "key": "5", "alt_key": 1}]


async def test_concurrent_puts_share_one_volume_and_one_directory_call() -> None:
    layout: dict[int, list[FakeStore | str]] = {
        vid: [FakeStore(f"{vid}a"), FakeStore(f"{vid}b"), FakeStore(f"{vid}c")] for vid in (1, 2, 3)
    }
    async with (
        scripted(layout) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET), writable_cache_s=60.0) as writer,
    ):
        refs = await asyncio.gather(*(writer.put(k, 0, b"x" * 100) for k in range(40)))
        assert len({r.volume_id for r in refs}) == 1  # one group commit per replica
        # volume_id still wins while it is writable.
        other = next(v for v in (1, 2, 3) if v != refs[0].volume_id)
        assert (await writer.put(99, 0, b"y", volume_id=other)).volume_id == other
        assert directory.of("GET", "/writable") == [None]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [("error", "no_space"), ("silent", "timeout"), ("absent", "unreachable")],
)
async def test_a_failing_replica_turns_the_volume_readonly_and_the_write_goes_elsewhere(
    bad: str, reason: str
) -> None:
    failing: FakeStore | str = "absent" if bad == "absent" else FakeStore("bad", bad)
    layout: dict[int, list[FakeStore | str]] = {
        1: [FakeStore("a"), failing, FakeStore("b")],
        2: [FakeStore("c"), FakeStore("d"), FakeStore("e")],
    }
    async with (
        scripted(layout) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET), replica_timeout_s=0.3) as writer,
    ):
        ref = await writer.put(5, 1, b"second", volume_id=1)
        assert ref.volume_id == 2
        bad_node = directory.volumes[0]["node_ids"][1]
        assert directory.of("POST", "/volumes/1/readonly") == [
            {"reason": reason, "node_id": bad_node}
        ]
        # Two replicas took the write: its delete is queued through the directory.
        assert directory.of("POST", "/deletes") == [{"volume_id": 1, "key": "5", "alt_key": 1}]
        # The failed volume is skipped from now on, without asking the directory again.
        assert (await writer.put(6, 1, b"third", volume_id=1)).volume_id == 2
        assert len(directory.of("POST", "/volumes/1/readonly")) == 1
        assert directory.of("GET", "/writable") == [None]


async def test_no_partial_delete_when_no_replica_took_the_write() -> None:
    layout: dict[int, list[FakeStore | str]] = {
        1: ["absent", "absent", "absent"],
        2: [FakeStore("c"), FakeStore("d"), FakeStore("e")],
    }
    async with (
        scripted(layout) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET)) as writer,
    ):
        assert (await writer.put(5, 0, b"x", volume_id=1)).volume_id == 2
        assert len(directory.of("POST", "/volumes/1/readonly")) == 1
        assert directory.of("POST", "/deletes") == []


async def test_no_writable_volume_when_every_volume_fails() -> None:
    layout: dict[int, list[FakeStore | str]] = {
        1: [FakeStore("a", "error"), FakeStore("b"), FakeStore("c")],
        2: [FakeStore("d"), FakeStore("e", "error"), FakeStore("f")],
    }
    async with (
        scripted(layout) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET), put_retry_s_max=0.3) as writer,
    ):
        with pytest.raises(NoWritableVolume) as info:
            await writer.put(5, 0, b"x")
        assert str(info.value) == (
            "no writable volume accepted the write within 0.3 s: 2 volumes failed "
            "(node a no_space; node e no_space), the directory lists none other"
        )
        assert (info.value.status, info.value.code) == (503, "no_writable_volume")
        assert info.value.retry_after_s == 1.0
        reported = [p for m, p, _ in directory.calls if p.endswith("/readonly")]
        assert sorted(reported) == ["/volumes/1/readonly", "/volumes/2/readonly"]
        # While it waited, the writer asked the directory for new volumes.
        assert len(directory.of("GET", "/writable")) >= 2


async def test_volumes_on_an_unreachable_node_are_not_tried() -> None:
    others = [FakeStore("c"), FakeStore("d")]
    layout: dict[int, list[FakeStore | str]] = {
        1: [FakeStore("a"), "absent:dead", FakeStore("b")],
        2: [others[0], "absent:dead", others[1]],
        3: [FakeStore("e"), FakeStore("f"), FakeStore("g")],
    }
    async with (
        scripted(layout) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET)) as writer,
    ):
        assert (await writer.put(5, 0, b"x", volume_id=1)).volume_id == 3
        assert (await writer.put(6, 0, b"y", volume_id=2)).volume_id == 3
        assert [p for _, p, _ in directory.calls if p.endswith("/readonly")] == [
            "/volumes/1/readonly"
        ]
        assert [s.puts for s in others] == [[], []]


async def test_a_put_waits_for_the_directory_to_list_a_new_volume() -> None:
    fresh = [FakeStore("c"), FakeStore("d"), FakeStore("e")]
    layout: dict[int, list[FakeStore | str]] = {
        1: ["absent:dead", FakeStore("a"), FakeStore("b")],
        2: list(fresh),
    }
    async with scripted(layout) as directory:
        volume_2 = directory.volumes.pop()  # listed only once the put has failed on 1
        async with BlobWriter(directory.url, credentials=creds(SECRET)) as writer:
            put = asyncio.create_task(writer.put(5, 0, b"late"))
            async with asyncio.timeout(5):
                while not directory.of("POST", "/volumes/1/readonly"):
                    directory.called.clear()
                    await directory.called.wait()
            directory.volumes = [volume_2]
            ref = await put
        assert ref.volume_id == 2
        assert [len(s.puts) for s in fresh] == [1, 1, 1]


async def test_an_unreachable_directory_is_no_writable_volume() -> None:
    async with BlobWriter(_unused_url(), credentials=creds(SECRET), put_retry_s_max=0.2) as writer:
        with pytest.raises(NoWritableVolume, match="asking the directory failed"):
            await writer.put(5, 0, b"x")


async def test_put_file_streams_the_same_bytes_and_checksum_to_every_replica(
    tmp_path: Path,
) -> None:
    stores = [FakeStore("a"), FakeStore("b"), FakeStore("c")]
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "upload").write_bytes(data)
    async with (
        scripted({1: list(stores)}) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET)) as writer,
    ):
        ref = await writer.put_file(42, 7, tmp_path / "upload", cookie=0xABC)
        checksum = f"{xxhash.xxh3_64_intdigest(data):016x}"
        assert (ref.volume_id, ref.size, ref.etag) == (1, len(data), f'"{checksum}"')
        for s in stores:
            ((path, headers, body),) = s.puts
            assert path == "/n/1/42/7/0000000000000abc"
            assert body == data
            assert headers["X-Pinhole-Checksum"] == checksum
        with pytest.raises(FileNotFoundError):
            await writer.put_file(43, 7, tmp_path / "absent")
        assert [len(s.puts) for s in stores] == [1, 1, 1]


async def test_a_cancelled_put_leaves_no_replica_request_running() -> None:
    silent = [FakeStore("a", "silent"), FakeStore("b", "silent"), FakeStore("c", "silent")]
    async with (
        scripted({1: list(silent)}) as directory,
        BlobWriter(directory.url, credentials=creds(SECRET)) as writer,
    ):
        put = asyncio.create_task(writer.put(5, 0, b"x"))
        async with asyncio.timeout(5):
            for s in silent:
                await s.arrived.wait()
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        await asyncio.sleep(0)
        names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
        assert not [n for n in names if "_replica_put" in n or n == "LeanHTTPClient.request"]
        assert directory.of("POST", "/volumes/1/readonly") == []


def test_the_fake_store_answers_like_the_store() -> None:
    # The writer reads the ETag from the store's PUT answer; keep the fake's shape honest.
    from store import http_api

    answer = http_api._PUT_ANSWER % (1, 2, 3, 4, 0xAB)
    assert json.loads(answer)["etag"] == f'"{0xAB:016x}"'
