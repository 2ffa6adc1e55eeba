"""Fixtures of the directory tests: a database backend (SQLite file or a fresh PostgreSQL
schema, parametrized), in-process store nodes, and simulated heartbeats.

The heartbeats are sent by the test (`SimNode`) rather than by the store node itself, so the
tests control exactly when a node goes silent; the node behind them is a real store node
serving real volumes on 127.0.0.1. A cluster started with a `ManualClock` lets a test move
the directory's time (`Cluster.advance`) instead of waiting for node timeouts, cooldowns
and backoffs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from common.db import open_database
from common.jobs import ManualClock
from directory.client import DirectoryClient
from directory.config import DirectoryConfig
from directory.server import running_directory
from directory.service import Directory
from store.client import StoreClient
from store.config import StoreConfig
from store.node import StoreNode
from store.server import running_node
from store.volume_config import VolumeLimits
from tests.conftest import IN_CI, creds

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SECRET = b"directory-tests-secret-0123456789"
DOMAINS = ("dc1/rack1/host1", "dc1/rack1/host2", "dc1/rack2/host3", "dc1/rack2/host4")
SMALL_VOLUMES = VolumeLimits(size_bytes_max=64 * 1024 * 1024, memtable_entries_max=64)


async def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        db = await open_database(PG_URL)
        try:
            async with db.snapshot() as conn:
                await conn.exec_driver_sql("SELECT 1")
        finally:
            await db.close()
    except Exception as e:
        return f"PostgreSQL at {PG_URL} unavailable: {e!r}"
    return None


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema for one test, dropped afterwards (concurrent runs never collide)."""
    problem = await postgres_available()
    if problem is not None:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield name
    finally:
        db = await open_database(PG_URL)
        try:
            async with db.transaction() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """DirectoryConfig fields selecting the database."""
    if request.param == "sqlite":
        yield {"data_dir": tmp_path / "directory"}
        return
    async with pg_schema() as schema:
        yield {
            "data_dir": tmp_path / "directory",
            "database_url": PG_URL,
            "database_schema": schema,
        }


def fast_config(backend: dict[str, Any], **overrides: Any) -> DirectoryConfig:
    fields: dict[str, Any] = {
        "port": 0,
        "heartbeat_interval_s": 0.1,
        "node_timeout_s": 1.0,
        "health_interval_s": 0.1,
        "lease_s": 1.0,
        "readonly_cooldown_s": 0.5,
        "writable_volumes_min": 0,
        "node_free_bytes_min": 0,
        "node_request_timeout_s": 2.0,
        "delete_retry_s_max": 0.5,
        **backend,
    }
    fields.update(overrides)
    return DirectoryConfig(**fields)


class SimNode:
    """A real in-process store node plus a heartbeat task the test can stop and restart."""

    def __init__(self, node_id: str, domain: str, data_dir: Path, directory_url: str) -> None:
        self.node_id = node_id
        self.domain = domain
        self.data_dir = data_dir
        self.directory_url = directory_url
        self.node: StoreNode | None = None
        self.url = ""
        self._stack: contextlib.AsyncExitStack | None = None
        self._beat: asyncio.Task[None] | None = None
        self._pause = asyncio.Event()

    @property
    def beating(self) -> bool:
        """Whether the node runs and its heartbeats are not paused."""
        return self.node is not None and self._beat is not None

    async def start(self, *, heartbeat: bool = True) -> None:
        self._stack = contextlib.AsyncExitStack()
        config = StoreConfig(
            data_dir=self.data_dir,
            port=0,
            node_id=self.node_id,
            failure_domain=self.domain,
            volume=SMALL_VOLUMES,
            compaction_check_interval_s=0,
        )
        node, server = await self._stack.enter_async_context(
            running_node(config, credentials=creds(SECRET, "store"))
        )
        self.node = node
        self.url = f"http://127.0.0.1:{server.port}"
        if heartbeat:
            await self.beat_once()
            self.resume_heartbeats()

    def resume_heartbeats(self) -> None:
        self._pause = asyncio.Event()
        self._beat = asyncio.create_task(self._heartbeats(self._pause))

    async def beat_once(self) -> None:
        assert self.node is not None
        stats = self.node.statistics()
        async with DirectoryClient(self.directory_url, credentials=creds(SECRET)) as client:
            await client.heartbeat(
                node_id=self.node_id,
                role="store",
                url=self.url,
                failure_domain=self.domain,
                free_bytes=stats.free_bytes,
                volumes=[dataclasses.asdict(v) for v in stats.volumes],
            )

    async def _heartbeats(self, pause: asyncio.Event) -> None:
        while not pause.is_set():
            with contextlib.suppress(Exception):
                await self.beat_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pause.wait(), 0.1)

    async def pause_heartbeats(self) -> None:
        """Stops the heartbeats once the one in flight has been answered: a heartbeat
        cut off mid-request could still reach the directory after this returns."""
        if self._beat is not None:
            self._pause.set()
            await self._beat
            self._beat = None

    async def stop(self) -> None:
        await self.pause_heartbeats()
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self.node = None

    def client(self) -> StoreClient:
        return StoreClient(self.url, credentials=creds(SECRET))


@dataclasses.dataclass
class Cluster:
    directory: Directory
    url: str
    nodes: list[SimNode]

    def client(self) -> DirectoryClient:
        return DirectoryClient(self.url, credentials=creds(SECRET))

    def node(self, node_id: str) -> SimNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    async def advance(self, seconds: float) -> None:
        """Moves the directory's ManualClock on by `seconds`; then every node still
        beating sends a heartbeat at the new time, so only the silent ones age."""
        clock = self.directory.clock
        assert isinstance(clock, ManualClock), "the cluster was started without a ManualClock"
        await clock.advance(seconds)
        await asyncio.gather(*(n.beat_once() for n in self.nodes if n.beating))


@contextlib.asynccontextmanager
async def running_cluster(
    config: DirectoryConfig,
    tmp: Path,
    *,
    stores: int = 4,
    loops: bool = True,
    clock: ManualClock | None = None,
) -> AsyncIterator[Cluster]:
    async with running_directory(
        config, credentials=creds(SECRET, "directory"), loops=loops, clock=clock
    ) as (directory, port):
        url = f"http://127.0.0.1:{port}"
        nodes = [
            SimNode(f"store-{i + 1}", DOMAINS[i % len(DOMAINS)], tmp / f"store-{i + 1}", url)
            for i in range(stores)
        ]
        try:
            await asyncio.gather(*(n.start() for n in nodes))
            yield Cluster(directory, url, nodes)
        finally:
            for n in nodes:
                await n.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, what: str = ""
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)
