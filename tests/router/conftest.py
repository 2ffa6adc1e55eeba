"""A small real cluster for router tests: store nodes on loopback, a directory stand-in (a
tiny aiohttp app serving GET /volumes/{vid}, GET /caches and POST /repairs from plain
dicts: a real HTTP peer whose answers the test controls), and the router itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.credentials import Purpose
from common.photo import Format, alt_key, photo_path
from router.config import RouterConfig
from router.http_api import RouterHttpApi
from router.server import running_router
from store.client import StoreClient
from store.config import StoreConfig
from store.server import running_node
from store.volume_config import VolumeLimits
from tests.conftest import creds

SECRET = b"router-test-secret-0123456789abcdef"
# The variant the tests read by default: a published one (rendition 0, the original, is
# served to nobody without the internal read credential).
PUBLIC_RENDITION = 640
_VERIFIER = creds(SECRET, "directory")
COOKIE = 0x0123456789ABCDEF
MiB = 1024 * 1024


@dataclass
class FakeDirectory:
    """The directory's read API, served from what the test puts in `volumes`/`caches`."""

    volumes: dict[int, dict[str, Any]] = field(default_factory=dict)
    caches: list[dict[str, str]] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    volume_requests: int = 0
    cache_requests: int = 0
    fail: bool = False  # answer 500 to everything
    url: str = ""
    unauthorized: int = 0
    # Sent as X-Pinhole-Volume-Id-Max on lookups, like the directory (None: not sent).
    volume_id_max: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/volumes/{vid}", self._volume)
        app.router.add_get("/caches", self._caches)
        app.router.add_post("/repairs", self._repair)
        return app

    def _refused(self, request: web.Request) -> web.Response | None:
        """401 unless the request carries what a router sends lookups with (read)."""
        if _VERIFIER.allows(request.headers.get("Authorization"), Purpose.READ):
            return None
        self.unauthorized += 1
        return web.json_response({"error": {"code": "unauthorized", "message": "no"}}, status=401)

    async def _volume(self, request: web.Request) -> web.Response:
        self.volume_requests += 1
        if (refused := self._refused(request)) is not None:
            return refused
        if self.fail:
            return web.json_response({"error": {"code": "x", "message": "down"}}, status=500)
        headers = {}
        if self.volume_id_max is not None:
            headers["X-Pinhole-Volume-Id-Max"] = str(self.volume_id_max)
        lv = self.volumes.get(int(request.match_info["vid"]))
        if lv is None:
            body = {"error": {"code": "not_found", "message": "no"}}
            return web.json_response(body, status=404, headers=headers)
        return web.json_response(lv, headers=headers)

    async def _caches(self, request: web.Request) -> web.Response:
        self.cache_requests += 1
        if (refused := self._refused(request)) is not None:
            return refused
        if self.fail:
            return web.json_response({"error": {"code": "x", "message": "down"}}, status=500)
        return web.json_response({"caches": self.caches})

    async def _repair(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        self.repairs.append(await request.json())
        return web.json_response({}, status=202)

    def set_volume(
        self, vid: int, stores: list[tuple[str, str]], *, writable: bool = True, alive: bool = True
    ) -> None:
        self.volumes[vid] = {
            "volume_id": vid,
            "writable": writable,
            "reason": "",
            "replicas": [
                {
                    "node_id": node_id,
                    "url": url,
                    "state": "ready",
                    "alive": alive,
                    "failure_domain": "dc1/rack1/host1",
                }
                for node_id, url in stores
            ],
        }


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Store:
    node_id: str
    url: str
    stack: contextlib.AsyncExitStack

    async def stop(self) -> None:
        await self.stack.aclose()


async def start_store(tmp_path: Path, node_id: str) -> Store:
    config = StoreConfig(
        data_dir=tmp_path / node_id,
        port=0,
        node_id=node_id,
        compaction_check_interval_s=0,
        volume=VolumeLimits(size_bytes_max=64 * MiB, needle_data_bytes_max=4 * MiB),
    )
    stack = contextlib.AsyncExitStack()
    _, server = await stack.enter_async_context(
        running_node(config, credentials=creds(SECRET, "store"), create_volumes=[1, 2])
    )
    return Store(node_id, f"http://127.0.0.1:{server.port}", stack)


@dataclass
class Cluster:
    directory: FakeDirectory
    stores: list[Store]
    router_url: str
    api: RouterHttpApi
    http: aiohttp.ClientSession

    async def put(
        self,
        key: int,
        data: bytes,
        *,
        vid: int = 1,
        rendition: int = PUBLIC_RENDITION,
        fmt: Format = Format.JPEG,
        cookie: int = COOKIE,
        on: list[int] | None = None,
    ) -> None:
        """Writes the variant to the stores listed in `on` (indexes; default all)."""
        for i in on if on is not None else range(len(self.stores)):
            async with StoreClient(self.stores[i].url, credentials=creds(SECRET)) as c:
                await c.put(vid, key, alt_key(rendition, fmt), cookie, data)

    def url(
        self,
        key: int,
        fmt: Format | None = Format.JPEG,
        *,
        vid: int = 1,
        rendition: int = PUBLIC_RENDITION,
        cookie: int = COOKIE,
    ) -> str:
        return self.router_url + photo_path(vid, key, cookie, rendition, fmt)


def router_config(directory_url: str, **overrides: Any) -> RouterConfig:
    settings: dict[str, Any] = {
        "port": 0,
        "directory_url": directory_url,
        "caches_refresh_s": 0.1,
        "cache_timeout_s": 2.0,
        "store_timeout_s": 1.0,
        "directory_timeout_s": 1.0,
        **overrides,
    }
    return RouterConfig(**settings)


@contextlib.asynccontextmanager
async def cluster_of(
    tmp_path: Path, *, stores: int = 3, **router_overrides: Any
) -> AsyncIterator[Cluster]:
    directory = FakeDirectory()
    async with contextlib.AsyncExitStack() as stack:
        directory.url = await stack.enter_async_context(serving(directory.app()))
        nodes = [await start_store(tmp_path, f"store-{i}") for i in range(1, stores + 1)]
        for node in nodes:
            stack.push_async_callback(node.stop)
        for vid in (1, 2):
            directory.set_volume(vid, [(n.node_id, n.url) for n in nodes])
        config = router_config(directory.url, **router_overrides)
        api, server = await stack.enter_async_context(
            running_router(config, credentials=creds(SECRET, "router"))
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Cluster(directory, nodes, f"http://127.0.0.1:{server.port}", api, http)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_of(tmp_path) as c:
        yield c
