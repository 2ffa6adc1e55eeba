"""Helpers for the store's cluster tests: node configs, a stand-in directory (a real aiohttp
server that records heartbeats and repair reports), waiting for jobs."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from common.credentials import Purpose
from store.client import StoreClient
from store.config import StoreConfig
from store.volume_config import VolumeLimits
from tests.conftest import auth, creds

SECRET = b"test-secret-0123456789abcdef"
READ = auth(SECRET, Purpose.READ)
WRITE = auth(SECRET, Purpose.WRITE)
NODE = auth(SECRET, Purpose.NODE)
ADMIN = auth(SECRET, Purpose.ADMIN)
COOKIE = 0x1234ABCD5678EF90


def node_config(data_dir: Path, **overrides: Any) -> StoreConfig:
    """A small, quiet node on a free port: no background compaction or scrub."""
    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "port": 0,
        "compaction_check_interval_s": 0,
        "scrub_interval_s": 0,
        "volume": VolumeLimits(size_bytes_max=64 * 1024 * 1024, needle_data_bytes_max=1024**2),
    }
    settings.update(overrides)
    return StoreConfig(**settings)


class StandInDirectory:
    """A real HTTP peer answering POST /heartbeat and POST /repairs like the directory,
    checking the credential and keeping what it got."""

    def __init__(self, *, interval_s: float | None = None) -> None:
        self.interval_s = interval_s
        self.heartbeats: list[dict[str, Any]] = []
        self.repairs: list[dict[str, Any]] = []
        self.unauthorized = 0
        # While set, every request answers 503 (an outage without closing connections).
        self.down = False
        self.beat = asyncio.Event()
        self.repaired = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._credentials = creds(SECRET, "directory")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _authorized(self, request: web.Request) -> bool:
        # Heartbeats and scrubber reports: what a store node sends them with.
        ok = self._credentials.allows(request.headers.get("Authorization"), Purpose.NODE)
        if not ok:
            self.unauthorized += 1
        return ok

    async def _heartbeat(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"error": {"code": "down"}}, status=503)
        if not self._authorized(request):
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        self.heartbeats.append(await request.json())
        self.beat.set()
        answer = {"interval_s": self.interval_s} if self.interval_s else {}
        return web.json_response(answer)

    async def _repairs(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"error": {"code": "down"}}, status=503)
        if not self._authorized(request):
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        self.repairs.append(await request.json())
        self.repaired.set()
        return web.json_response({}, status=202)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/heartbeat", self._heartbeat)
        app.router.add_post("/repairs", self._repairs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def next_beat(self, timeout_s: float = 5.0) -> dict[str, Any]:
        self.beat.clear()
        await asyncio.wait_for(self.beat.wait(), timeout_s)
        return self.heartbeats[-1]


def unused_port() -> int:
    """A port nothing listens on (for a peer that is down, then starts there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_job(
    client: StoreClient, vid: int, kind: str, *, timeout_s: float = 30.0
) -> dict[str, Any]:
    return await client.wait_job(vid, kind, poll_s=0.02, timeout_s=timeout_s)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, timeout_s: float = 10.0, poll_s: float = 0.02
) -> None:
    """Waits until `check()` holds (polling); AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s} s")
        await asyncio.sleep(poll_s)
