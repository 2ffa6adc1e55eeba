"""The Directory: the database, the HTTP session to nodes, and the background loops.

Each loop (health, growth, deletes, repairs, releases: the f4 tier's release retries,
tiering.py) is a `LeasedLoop` (common/jobs/lease.py): it
runs every health_interval_s in the process that holds its lease, renewed while a pass
runs; a process that loses it cancels its pass. Everything a pass does is idempotent, so a
pass cut short leaves nothing to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from common import request_ids
from common.credentials import Credentials
from common.db import Database
from common.jobs import Clock, LeasedLoop, SystemClock
from directory import deletes, growth, health, repairs, tiering
from directory.config import DirectoryConfig
from directory.schema import LEASE_PREFIX
from directory.state import ClusterState, load_state, volume_id_max

LOOPS = ("health", "growth", "deletes", "repairs", "releases")


@dataclass(frozen=True, slots=True)
class LookupSnapshot:
    """The state lookups answer from, its highest volume id, and when (clock time) it was
    loaded."""

    state: ClusterState
    volume_id_max: int
    loaded_unix_s: float


PASS_LOG_MAX = 1000
# On close, a loop's pass in progress gets this long to end before it is cancelled.
LOOP_STOP_S_MAX = 5.0


class Directory:
    def __init__(
        self,
        config: DirectoryConfig,
        db: Database,
        *,
        credentials: Credentials,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
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
        self.loops: dict[str, LeasedLoop] = {}
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
            timeout=aiohttp.ClientTimeout(total=self.config.node_request_timeout_s),
            trace_configs=[request_ids.trace_config()],
        )
        self._stopping.clear()
        if loops:
            passes: dict[str, Callable[[Directory], Coroutine[Any, Any, None]]] = {
                "health": health.health_pass,
                "growth": growth.growth_pass,
                "deletes": deletes.delete_pass,
                "repairs": repairs.repair_pass,
                "releases": tiering.release_pass,
            }
            for name in LOOPS:
                loop = self._leased_loop(name, passes[name])
                self.loops[name] = loop
                self._tasks.append(
                    asyncio.create_task(loop.run(self._stopping), name=f"directory-{name}")
                )

    def _leased_loop(
        self, name: str, one_pass: Callable[[Directory], Coroutine[Any, Any, None]]
    ) -> LeasedLoop:
        def record(started: float, finished: float) -> None:
            self.passes[name] += 1
            self.pass_log.append((name, started, finished))

        return LeasedLoop(
            self.db,
            LEASE_PREFIX + name,
            lambda: one_pass(self),
            holder=self.holder,
            lease_s=self.config.lease_s,
            interval_s=self.config.health_interval_s,
            clock=self.clock,
            on_pass=record,
            stop_s_max=LOOP_STOP_S_MAX,
        )

    async def close(self) -> None:
        """Stops the loops: each ends after its current pass (at most LOOP_STOP_S_MAX),
        then what still runs is cancelled (a pass cancelled inside a transaction leaves
        its connection to the driver's forced close, which can stall on SQLite), and each
        releases its lease."""
        self._stopping.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.loops.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def state(self) -> ClusterState:
        async with self.db.snapshot() as conn:
            return await load_state(conn, self.config, self.clock.now())

    async def lookup_state(self, *, volume_id: int | None = None) -> LookupSnapshot:
        """The state read-only lookups answer from: a snapshot at most lookup_snapshot_s
        old, one load at a time for everyone waiting. For a `volume_id` above the
        snapshot's highest id, the highest id in the database is read (one indexed query,
        at most once per lookup_reload_s_min): only when a volume was created since is the
        whole state loaded again. A flood of made-up ids thus costs a few cheap queries a
        second and no state load. Ages are read on the directory's clock; a clock that
        stepped back makes an age negative, which counts as too old (never as fresh for
        longer)."""
        now = self.clock.now()
        cached = self._lookup
        if cached is not None and 0 <= now - cached.loaded_unix_s < self.config.lookup_snapshot_s:
            if volume_id is None or volume_id <= cached.volume_id_max:
                return cached
            if 0 <= now - self._id_max_checked < self.config.lookup_reload_s_min:
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

    def forget_lookup(self) -> None:
        """The next lookup loads the state again (after a change lookups must show)."""
        self._lookup = None

    async def _load_lookup(self) -> LookupSnapshot:
        try:
            started = self.clock.now()
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

    def statistics(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "passes": dict(self.passes),
            "counters": dict(self.counters),
            "alerts": dict(self.alerts),
        }
