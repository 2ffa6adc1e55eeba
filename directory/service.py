"""The Directory: the database, the HTTP session to nodes, and the background loops.

Each loop (health, growth, deletes, repairs) runs every health_interval_s in the process
that holds its lease (directory/leases.py). The lease is renewed while a pass runs; a
process that loses it cancels its pass. Everything a pass does is idempotent, so a pass
cut short leaves nothing to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from common.credentials import Credentials
from common.db import Database
from directory import deletes, growth, health, leases, repairs
from directory.config import DirectoryConfig
from directory.state import ClusterState, load_state, volume_id_max

LOOPS = ("health", "growth", "deletes", "repairs")


@dataclass(frozen=True, slots=True)
class LookupSnapshot:
    """The state lookups answer from, its highest volume id, and when it was loaded."""

    state: ClusterState
    volume_id_max: int
    loaded_monotonic_s: float


PASS_LOG_MAX = 1000
# On close, a loop's pass in progress gets this long to end before it is cancelled.
LOOP_STOP_S_MAX = 5.0


class Directory:
    def __init__(self, config: DirectoryConfig, db: Database, *, credentials: Credentials) -> None:
        self.config = config
        self.db = db
        # Sent to stores and caches (deletes, repairs, volume orders); checked on requests.
        self.credentials = credentials
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.log = logging.getLogger("pinhole.directory")
        self.counters: Counter[str] = Counter()
        # Loop passes run by this process, per loop (tests and metrics read it).
        self.passes: Counter[str] = Counter()
        # (loop, started, finished) in time.monotonic() of the recent passes run here.
        self.pass_log: deque[tuple[str, float, float]] = deque(maxlen=PASS_LOG_MAX)
        self.alerts: dict[str, str] = {}
        self.nodes_seen_alive: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._lookup: LookupSnapshot | None = None
        self._lookup_loading: asyncio.Future[LookupSnapshot] | None = None
        self.lookup_loads = 0
        self.id_max_checks = 0
        self._id_max_checked = -1e18

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Directory.start() was not called"
        return self._session

    async def start(self, *, loops: bool = True) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.node_request_timeout_s)
        )
        self._stopping.clear()
        if loops:
            passes: dict[str, Callable[[Directory], Coroutine[Any, Any, None]]] = {
                "health": health.health_pass,
                "growth": growth.growth_pass,
                "deletes": deletes.delete_pass,
                "repairs": repairs.repair_pass,
            }
            for name in LOOPS:
                self._tasks.append(
                    asyncio.create_task(self._loop(name, passes[name]), name=f"directory-{name}")
                )

    async def close(self) -> None:
        """Stops the loops: each ends after its current pass (at most LOOP_STOP_S_MAX),
        then what still runs is cancelled. A pass cancelled inside a transaction leaves
        its connection to the driver's forced close, which can stall on SQLite."""
        self._stopping.set()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=LOOP_STOP_S_MAX)
            for task in running:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for name in LOOPS:
            with contextlib.suppress(Exception):
                await leases.release(self.db, name, self.holder)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def state(self) -> ClusterState:
        async with self.db.snapshot() as conn:
            return await load_state(conn, self.config, time.time())

    async def lookup_state(self, *, volume_id: int | None = None) -> LookupSnapshot:
        """The state read-only lookups answer from: a snapshot at most lookup_snapshot_s
        old, one load at a time for everyone waiting. For a `volume_id` above the
        snapshot's highest id, the highest id in the database is read (one indexed query,
        at most once per lookup_reload_s_min): only when a volume was created since is the
        whole state loaded again. A flood of made-up ids thus costs a few cheap queries a
        second and no state load."""
        now = time.monotonic()
        cached = self._lookup
        if cached is not None and now - cached.loaded_monotonic_s < self.config.lookup_snapshot_s:
            if volume_id is None or volume_id <= cached.volume_id_max:
                return cached
            if now - self._id_max_checked < self.config.lookup_reload_s_min:
                return cached
            self._id_max_checked = now
            self.id_max_checks += 1
            async with self.db.snapshot() as conn:
                top = await volume_id_max(conn)
            if top <= cached.volume_id_max:
                return cached
        loading = self._lookup_loading
        if loading is None:
            loading = asyncio.ensure_future(self._load_lookup())
            self._lookup_loading = loading
        # shield: one caller giving up must not cancel the load the others wait for.
        return await asyncio.shield(loading)

    async def _load_lookup(self) -> LookupSnapshot:
        try:
            started = time.monotonic()
            state = await self.state()
            self.lookup_loads += 1
            self._lookup = LookupSnapshot(state, state.volume_id_max, started)
            return self._lookup
        finally:
            self._lookup_loading = None

    # -- alerts ----------------------------------------------------------------------------

    def note_alert(self, name: str, message: str) -> None:
        if name not in self.alerts:
            self.log.error("alert %s: %s", name, message)
        self.alerts[name] = message

    def clear_alert(self, name: str) -> None:
        if self.alerts.pop(name, None) is not None:
            self.log.info("alert %s cleared", name)

    # -- loops -----------------------------------------------------------------------------

    async def _loop(
        self, name: str, one_pass: Callable[[Directory], Coroutine[Any, Any, None]]
    ) -> None:
        interval = self.config.health_interval_s
        while not self._stopping.is_set():
            try:
                started = await self._pass_under_lease(name, one_pass)
                if started is not None:
                    self.passes[name] += 1
                    self.pass_log.append((name, started, time.monotonic()))
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("directory %s loop pass failed", name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    async def _pass_under_lease(
        self, name: str, one_pass: Callable[[Directory], Coroutine[Any, Any, None]]
    ) -> float | None:
        """Runs one pass if this process holds (or takes) the lease: the pass's start
        (time.monotonic()) when it ran to the end, None otherwise."""
        lease_s = self.config.lease_s
        if not await leases.acquire(self.db, name, self.holder, lease_s):
            return None
        started = time.monotonic()
        task = asyncio.create_task(one_pass(self))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=lease_s / 4)
                if done:
                    task.result()
                    return started
                if not await leases.acquire(self.db, name, self.holder, lease_s):
                    self.log.warning("lost the %s lease during a pass; stopping it", name)
                    return None
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def statistics(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "passes": dict(self.passes),
            "counters": dict(self.counters),
            "alerts": dict(self.alerts),
        }
