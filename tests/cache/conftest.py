"""Real parts for the cache tests: in-process store nodes on 127.0.0.1 (port 0), the real
cache server, and a small aiohttp app standing in for the directory's /heartbeat and
/repairs endpoints (it records what it receives)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from cache.config import CacheConfig
from cache.node import CacheNode
from cache.server import running_cache
from common.credentials import Purpose
from common.leanhttp import LeanHTTPServer
from store.client import StoreClient
from store.config import StoreConfig
from store.node import StoreNode
from store.server import running_node
from tests.conftest import auth, creds

SECRET = b"cache-tests-cluster-secret-0123456789"
VID = 1


@dataclass
class Store:
    node: StoreNode
    server: LeanHTTPServer
    url: str
    data_dir: Path
    _cm: Any
    stopped: bool = False

    def gets(self) -> int:
        """Requests the store node has received (reads and writes alike)."""
        return self.server.statistics().requests_total

    async def put(self, key: int, alt: int, cookie: int, data: bytes) -> None:
        async with StoreClient(self.url, credentials=creds(SECRET)) as c:
            await c.put(VID, key, alt, cookie, data)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self._cm.__aexit__(None, None, None)


StartStore = Callable[[], Awaitable[Store]]


@pytest.fixture
async def start_store(tmp_path: Path) -> AsyncIterator[StartStore]:
    started: list[Store] = []

    async def start() -> Store:
        data_dir = tmp_path / f"store{len(started)}"
        cm = running_node(
            StoreConfig(data_dir=data_dir, port=0),
            credentials=creds(SECRET, "store"),
            create_volumes=[VID],
        )
        node, server = await cm.__aenter__()
        store = Store(node, server, f"http://127.0.0.1:{server.port}", data_dir, cm)
        started.append(store)
        return store

    yield start
    for store in started:
        await store.stop()


@pytest.fixture
async def stores(start_store: StartStore) -> list[Store]:
    return [await start_store() for _ in range(3)]


@dataclass
class DirectoryStub:
    url: str
    repairs: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    unauthorized: int = 0
    replicas: list[str] = field(default_factory=list)  # answered by GET /volumes/{vid}


@pytest.fixture
async def directory() -> AsyncIterator[DirectoryStub]:
    stub = DirectoryStub(url="")
    verifier = creds(SECRET, "directory")

    def record(into: list[dict[str, Any]], status: int, answer: dict[str, Any]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            # What a cache node sends: node (heartbeats), read (repair reports, lookups).
            header = request.headers.get("Authorization")
            if not verifier.allows(header, Purpose.NODE, Purpose.READ):
                stub.unauthorized += 1
                return web.json_response({"error": {"code": "unauthorized"}}, status=401)
            into.append(json.loads(await request.read()))
            return web.json_response(answer, status=status)

        return handler

    async def volume(request: web.Request) -> web.Response:
        replicas = [{"node_id": f"node-{i}", "url": url} for i, url in enumerate(stub.replicas)]
        return web.json_response(
            {"volume_id": int(request.match_info["vid"]), "replicas": replicas}
        )

    app = web.Application()
    app.router.add_get("/volumes/{vid}", volume)
    app.router.add_post("/repairs", record(stub.repairs, 202, {}))
    app.router.add_post("/heartbeat", record(stub.heartbeats, 200, {"interval_s": 0.05}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}"
    yield stub
    await runner.cleanup()


@dataclass
class Cache:
    node: CacheNode
    server: LeanHTTPServer
    url: str
    http: aiohttp.ClientSession

    async def get(
        self,
        key: int,
        alt: int,
        cookie: int,
        replicas: list[str] | None,
        *,
        admit: bool = True,
        vid: int = VID,
        method: str = "GET",
        authorized: bool = True,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        headers = {"X-Pinhole-Admit": "1" if admit else "0"}
        if authorized:
            headers.update(auth(SECRET, Purpose.READ))  # what a router sends
        if replicas is not None:
            headers["X-Pinhole-Replicas"] = ",".join(replicas)
        async with self.http.request(
            method, f"{self.url}/c/{vid}/{key}/{alt}/{cookie:016x}", headers=headers
        ) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()

    async def delete(self, key: int, *, authorized: bool = True) -> tuple[int, Any]:
        headers = auth(SECRET, Purpose.WRITE) if authorized else {}
        async with self.http.delete(f"{self.url}/c/{VID}/{key}", headers=headers) as resp:
            return resp.status, await resp.json()


StartCache = Callable[..., Awaitable[Cache]]


@pytest.fixture
async def start_cache(directory: DirectoryStub) -> AsyncIterator[StartCache]:
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(**overrides: Any) -> Cache:
            config = replace(
                CacheConfig(port=0, directory_url=directory.url, fetch_timeout_s=2.0), **overrides
            )
            node, server = await stack.enter_async_context(
                running_cache(config, credentials=creds(SECRET, "cache"))
            )
            return Cache(node, server, f"http://127.0.0.1:{server.port}", http)

        yield start


@pytest.fixture
async def cache(start_cache: StartCache) -> Cache:
    return await start_cache()
