"""The cell's coordinator (`pinhole f4 watch`): watches the cell between cron runs, queues
rebuilds as soon as a block is lost, scrubs at a slower cadence and (optionally) queues
rebalances, and runs the queued f4 jobs when it can take the cell's lock.

A **tick** (every `watch_interval_s`) is cheap: each storage node is asked for its listing
(one request per node; no block is read), each written volume's index is taken from a
cache that is reloaded only when a copy's header names a newer generation (a 32-byte read
per placed copy), and every block is looked for in its node's listing (the block and its
sidecar). A block missing from a node that answers is lost at once; the blocks of a node
that does not answer are lost only once it has not answered for `node_lost_after_s` (a
restart is not a loss). Index copies are looked at the same way, on the placement that
passes over the lost nodes (f4.index.index_nodes with `down`): a copy missing from its
answering node, or behind the newest generation (a node back with a stale copy), is lost and
its volume gets a rebuild, which writes it (f4.rebuild.complete_index). A **scrub pass**
(every `scrub_interval_s`, its own task so ticks go on) reads every block of the nodes that
answer against its sidecar (f4.rebuild.check_block), paced at `scrub_mb_s` by the project's
Throttle. Every volume with a lost or corrupt block gets a rebuild job; `f4.jobs.enqueue`
keeps it to one not-done job per volume and kind, so a volume is never queued twice while
its job is pending or running. Every `rebalance_interval_s` (0: never) a volume whose plan
(f4.rebalance.plan) has moves gets a rebalance job.

A tick also finds the **stale files** in the listings (f4.stale: blocks, sidecars and
index copies that the volume's committed generation, by a quorum of its copies, places on
another node; a node back after its blocks were rebuilt elsewhere), with their sizes (a
HEAD each, once). One seen stale for `stale_block_grace_s` is handed to f4.stale.reclaim
while this process holds the cell's lock (after the due jobs): the rule is taken again on
the copies read whole, and the file is deleted only when the placed copy is healthy. The
grace is counted from when this process first saw the file (a restarted watcher waits it
again: erring towards keeping).

Queued jobs are run (in a task of their own, so ticks go on while a rebuild takes
minutes) by this process only while it holds `<cell_root>/f4.lock` (taken
without waiting, per run, and released after: invariant 52 holds, and a cron `pinhole f4
migrate` or `rebuild` finds it free between runs); when another process holds it, that
process's drain runs them. What the watcher saw is in `Watcher.status()` (its /status),
its /metrics, and `<work>/watch.json` (written atomically each tick; `pinhole f4 status
--json` shows it as `watcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from common.ids import IdGenerator
from common.jobs import JobRunner, JobState, JobStore
from common.jobs.local import Throttle
from f4 import index as index_file
from f4 import jobs as f4_jobs
from f4.block_store import block_name, index_name, sidecar_name
from f4.cell import Cell
from f4.encoder import write_json_atomic
from f4.errors import F4Error
from f4.index import VolumeIndex
from f4.rebalance import listings_of, plan
from f4.rebuild import check_block
from f4.stale import StaleFile, VolumeView, file_size, holders, peek, reclaim, stale_files, totals

log = logging.getLogger("pinhole.f4.watch")

STATE_FILE: Final = "watch.json"
_INDEX_NAME: Final = re.compile(r"^v(\d+)\.f4idx$")


@dataclass(frozen=True, slots=True)
class Lost:
    volume: int
    stripe: int
    block: int
    node: str
    problem: str  # "missing", "node lost", or a scrub's finding


@dataclass(frozen=True, slots=True)
class IndexCopyLost:
    volume: int
    node: str  # a node of the placement that passes over the lost nodes
    problem: str  # "missing", "unreadable", or "stale" (behind the newest generation)


@dataclass(frozen=True, slots=True)
class TickReport:
    tick: int
    unix_s: float
    nodes_up: int
    nodes_waiting: list[str]  # not answering, within node_lost_after_s
    nodes_lost: list[str]  # not answering for node_lost_after_s or more
    volumes: int
    blocks: int
    lost: list[Lost]
    seconds: float
    index_copies_lost: list[IndexCopyLost] = field(default_factory=list)
    stale: list[StaleFile] = field(default_factory=list)
    stale_nodes: dict[str, dict[str, int]] = field(default_factory=dict)  # files, bytes


@dataclass
class Counters:
    ticks: int = 0
    scrub_passes: int = 0
    scrub_bytes: int = 0
    blocks_lost_seen: int = 0  # lost blocks seen by ticks (a block counts once per tick)
    blocks_corrupt_seen: int = 0  # found by scrubs
    index_copies_lost_seen: int = 0  # missing or stale index copies seen by ticks
    rebuilds_queued: int = 0  # new rebuild jobs (not ones already pending)
    rebalances_queued: int = 0
    job_runs: int = 0  # times this process took the lock and ran the due jobs
    jobs_run: int = 0
    lock_busy: int = 0  # due jobs (or stale files) left to the other holder of the cell's lock
    stale_files_deleted: int = 0  # stale blocks, sidecars and index copies reclaimed
    stale_bytes_deleted: int = 0
    stale_deletes_refused: int = 0  # stale past the grace, but the placed copy was not healthy
    errors: int = 0  # ticks or passes that failed (logged)


class Watcher:
    """What a tick, a scrub pass and a rebalance check see (synchronous: run them on a
    thread). `clock`: wall-clock seconds, for the grace."""

    def __init__(self, cell: Cell, *, clock: Callable[[], float] = time.time) -> None:
        self.cell = cell
        self.config = cell.config
        self._clock = clock
        self.down_since: dict[str, float] = {}
        self._indexes: dict[int, VolumeIndex] = {}
        self._lock = threading.Lock()
        # (node, name) -> (when first seen stale, its size in bytes)
        self.stale_seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._stale: list[StaleFile] = []  # the last tick's

    def _index(self, volume: int, newest: int | None = None) -> VolumeIndex:
        """The volume's index from the cache, reloaded when `newest` (a generation the
        caller peeked at; None: peek here) is newer than the cached one."""
        racks = self.config.rack_of
        cached = self._indexes.get(volume)
        if cached is not None:
            if newest is None:
                newest = index_file.newest_generation(self.cell.store, volume, racks=racks)
            if newest is None or newest <= cached.generation:
                return cached
        idx = index_file.load(self.cell.store, volume, racks=racks)
        self._indexes[volume] = idx
        return idx

    def volumes(self, listings: dict[str, set[str]]) -> list[int]:
        """The written volumes: an index copy on some node and not still migrating."""
        found = {
            int(m.group(1))
            for names in listings.values()
            for m in (_INDEX_NAME.match(n) for n in names)
            if m
        }
        return sorted(v for v in found if self.cell.state(v) != "migrating")

    def tick(self, number: int) -> TickReport:
        started = time.monotonic()
        with self._lock:
            now = self._clock()
            listings = listings_of(self.cell.store)
            for node in self.cell.store.nodes():
                if node in listings:
                    self.down_since.pop(node, None)
                else:
                    self.down_since.setdefault(node, now)
            grace = self.config.node_lost_after_s
            lost_nodes = {n for n, t in self.down_since.items() if now - t >= grace}
            lost: list[Lost] = []
            copies_lost: list[IndexCopyLost] = []
            volumes = self.volumes(listings)
            blocks = 0
            views: dict[int, VolumeView] = {}
            for v in volumes:
                placed = index_file.index_nodes(
                    self.cell.store, v, racks=self.config.rack_of, down=lost_nodes
                )
                generations = {
                    n: self._peek(v, n)
                    for n in placed
                    if n in listings and index_name(v) in listings[n]
                }
                newest = max((g for g in generations.values() if g is not None), default=None)
                try:
                    idx = self._index(v, newest)
                except F4Error as e:
                    log.warning("volume %d: no index readable: %s", v, e.message)
                    continue
                others = {n: peek(self.cell.store, v, n) for n in holders(listings, v)}
                views[v] = VolumeView(idx, tuple(placed), {**others, **generations})
                for node in placed:
                    if node not in listings:
                        continue  # within its grace: a restart is not a loss
                    if node not in generations:
                        copies_lost.append(IndexCopyLost(v, node, "missing"))
                    elif (g := generations[node]) is None:
                        copies_lost.append(IndexCopyLost(v, node, "unreadable"))
                    elif g < idx.generation:
                        copies_lost.append(IndexCopyLost(v, node, "stale"))
                for s, info in enumerate(idx.stripes):
                    for b, node in enumerate(info.nodes):
                        blocks += 1
                        names = listings.get(node)
                        if names is None:
                            if node in lost_nodes:
                                lost.append(Lost(v, s, b, node, "node lost"))
                        elif block_name(v, s, b) not in names or sidecar_name(v, s, b) not in names:
                            lost.append(Lost(v, s, b, node, "missing"))
            stale = self._seen_stale(stale_files(listings, views), now)
            sizes = {k: size for k, (_, size) in self.stale_seen.items()}
            return TickReport(
                number,
                now,
                len(listings),
                sorted(set(self.down_since) - lost_nodes),
                sorted(lost_nodes),
                len(volumes),
                blocks,
                lost,
                time.monotonic() - started,
                copies_lost,
                stale,
                totals(stale, sizes),
            )

    def _seen_stale(self, found: list[StaleFile], now: float) -> list[StaleFile]:
        """Records when each stale file was first seen (and its size); forgets the ones no
        longer stale. Returns the ones still there."""
        seen: dict[tuple[str, str], tuple[float, int]] = {}
        there = []
        for f in found:
            key = (f.node, f.name)
            if key in self.stale_seen:
                seen[key] = self.stale_seen[key]
            else:
                size = file_size(self.cell.store, f)
                if size is None:
                    continue  # gone meanwhile
                seen[key] = (now, size)
            there.append(f)
        self.stale_seen = seen
        self._stale = there
        return there

    def due_stale(self) -> list[StaleFile]:
        """The stale files of the last tick seen for `stale_block_grace_s` or longer."""
        with self._lock:
            now = self._clock()
            grace = self.config.stale_block_grace_s
            return [f for f in self._stale if now - self.stale_seen[(f.node, f.name)][0] >= grace]

    def reclaim(self, due: list[StaleFile]) -> tuple[int, int, int]:
        """Deletes the `due` stale files that are still stale and safe (f4.stale.reclaim);
        the caller holds the cell's lock. (files deleted, their bytes, refused)."""
        throttle = Throttle(self.config.rebuild_mb_s * 1e6)
        report = reclaim(self.cell.store, due, racks=self.config.rack_of, throttle=throttle)
        with self._lock:
            for f in report.deleted:
                self.stale_seen.pop((f.node, f.name), None)
            # A refused file waits another grace (its placed copy is not read again at
            # every tick; a rebuild meanwhile repairs it).
            now = self._clock()
            for r in report.refused:
                log.warning("stale %s/%s kept: %s", r.file.node, r.file.name, r.reason)
                key = (r.file.node, r.file.name)
                if key in self.stale_seen:
                    self.stale_seen[key] = (now, self.stale_seen[key][1])
        if report.deleted:
            log.info(
                "deleted %d stale file(s), %d bytes", len(report.deleted), report.bytes_deleted
            )
        return len(report.deleted), report.bytes_deleted, len(report.refused)

    def _peek(self, volume: int, node: str) -> int | None:
        """The generation of the copy on `node` (a 32-byte read); None when unreadable."""
        try:
            return index_file.peek_generation(self.cell.store, volume, node)
        except (F4Error, struct.error):
            return None

    def scrub(self, throttle: Throttle) -> list[Lost]:
        """Every block of the answering nodes read against its sidecar, paced by
        `throttle`; the ones that fail."""
        listings = listings_of(self.cell.store)
        found = []
        for v in self.volumes(listings):
            try:
                with self._lock:
                    idx = self._index(v)
            except F4Error:
                continue
            for s, info in enumerate(idx.stripes):
                for b, node in enumerate(info.nodes):
                    if node not in listings:
                        continue
                    problem = check_block(
                        self.cell.store, v, s, b, node, info.block_length, throttle=throttle
                    )
                    if problem is not None:
                        found.append(Lost(v, s, b, node, problem))
        return found

    def unbalanced(self) -> list[int]:
        """The written volumes whose rebalance plan has moves now."""
        listings = listings_of(self.cell.store)
        out = []
        for v in self.volumes(listings):
            try:
                with self._lock:
                    idx = self._index(v)
            except F4Error:
                continue
            moves = plan(
                listings,
                self.cell.store.nodes(),
                idx,
                racks=self.config.rack_of,
                slack=self.config.rebalance_slack_blocks,
                moves_max=1,
            )
            if moves:
                out.append(v)
        return out


@contextlib.contextmanager
def cell_lock_or_none(cell: Cell) -> Any:
    """The cell's lock (flock, not waiting): yields True when taken, False when another
    process holds it."""
    path = cell.config.lock_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@dataclass
class WatchService:
    """The watcher's loop: ticks, scrub passes, rebalance checks, job runs, and what it saw."""

    cell: Cell
    jobs: JobStore
    interval_s: float
    clock: Callable[[], float] = time.time
    counters: Counters = field(default_factory=Counters)
    last: TickReport | None = None
    last_scrub_unix_s: float = 0.0
    last_rebalance_unix_s: float = 0.0
    started_unix_s: float = 0.0

    def __post_init__(self) -> None:
        self.watcher = Watcher(self.cell, clock=self.clock)
        self.config = self.cell.config
        self._ids = IdGenerator(self.config.id_shard)
        self._run_lock = asyncio.Lock()
        self._jobs_task: asyncio.Task[None] | None = None
        self.started_unix_s = self.clock()
        self.last_scrub_unix_s = self._saved().get("last_scrub_unix_s", self.started_unix_s)
        self.last_rebalance_unix_s = self.started_unix_s

    def _saved(self) -> dict[str, Any]:
        import json

        try:
            doc: dict[str, Any] = json.loads((self.config.work_dir / STATE_FILE).read_bytes())
        except (OSError, ValueError):
            return {}
        return doc

    async def _queue_rebuilds(self, lost: Sequence[Lost | IndexCopyLost]) -> None:
        for v in sorted({x.volume for x in lost}):
            before = {
                j.job_id
                for j in await f4_jobs.jobs_of(self.jobs.db, f4_jobs.REBUILD, v)
                if j.state != JobState.DONE
            }
            job = await f4_jobs.enqueue(
                self.jobs.db,
                self._ids,
                f4_jobs.REBUILD,
                v,
                now=time.time(),
                attempts_max=self.config.attempts_max,
            )
            if job.job_id not in before:
                self.counters.rebuilds_queued += 1
                log.info("volume %d: rebuild queued (job %d)", v, job.job_id)

    async def tick(self, *, wait: bool = True) -> TickReport:
        """One tick: look, queue rebuilds, maybe queue rebalances, run what is due. With
        `wait` false the jobs run in a task of their own (the loop's ticks go on while a
        rebuild takes minutes); a tick finding that task still busy leaves the new jobs to
        it (its drain runs every due job)."""
        report = await asyncio.to_thread(self.watcher.tick, self.counters.ticks + 1)
        self.counters.blocks_lost_seen += len(report.lost)
        self.counters.index_copies_lost_seen += len(report.index_copies_lost)
        await self._queue_rebuilds([*report.lost, *report.index_copies_lost])
        every = self.config.rebalance_interval_s
        if every and self.clock() - self.last_rebalance_unix_s >= every:
            self.last_rebalance_unix_s = self.clock()
            for v in await asyncio.to_thread(self.watcher.unbalanced):
                pending = [
                    j
                    for j in await f4_jobs.jobs_of(self.jobs.db, f4_jobs.REBALANCE, v)
                    if j.state != JobState.DONE
                ]
                if not pending:
                    await f4_jobs.enqueue(
                        self.jobs.db,
                        self._ids,
                        f4_jobs.REBALANCE,
                        v,
                        now=time.time(),
                        attempts_max=self.config.attempts_max,
                    )
                    self.counters.rebalances_queued += 1
        if wait:
            await self.run_due()
            await self.reclaim_due()
        elif self._jobs_task is None or self._jobs_task.done():
            self._jobs_task = asyncio.create_task(self._run_due_logged())
        self.last = report
        self.counters.ticks += 1
        await asyncio.to_thread(self._save)
        return report

    async def scrub(self) -> list[Lost]:
        """One scrub pass; queues rebuilds for what it finds."""
        throttle = Throttle(self.config.scrub_mb_s * 1e6)
        found = await asyncio.to_thread(self.watcher.scrub, throttle)
        self.counters.scrub_passes += 1
        self.counters.scrub_bytes += throttle.bytes
        self.counters.blocks_corrupt_seen += len(found)
        self.last_scrub_unix_s = self.clock()
        await self._queue_rebuilds(found)
        await asyncio.to_thread(self._save)
        return found

    async def _due(self) -> bool:
        import sqlalchemy as sa

        from common.jobs.schema import jobs

        c = jobs.c
        # Queued and due (not waiting out a backoff), or marked running (by a process
        # that holds the lock, or by a killed one: its orphan is queued again under it).
        query = sa.select(sa.func.count()).where(
            c.queue == f4_jobs.QUEUE,
            sa.or_(
                sa.and_(c.state == JobState.QUEUED, c.run_after_unix_s <= time.time()),
                c.state == JobState.RUNNING,
            ),
            c.kind.in_([k.name for k in f4_jobs.KINDS if k is not f4_jobs.MIGRATE]),
        )
        async with self.jobs.db.snapshot() as conn:
            return bool((await conn.execute(query)).scalar_one())

    async def _run_due_logged(self) -> None:
        try:
            await self.run_due()
            await self.reclaim_due()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.counters.errors += 1
            log.exception("running the f4 jobs failed")
        await asyncio.to_thread(self._save)

    async def run_due(self) -> int:
        """Runs the due rebuild and rebalance jobs (and any other f4 job then due) when the
        cell's lock is free; how many ran."""
        async with self._run_lock:
            if not await self._due():
                return 0
            with cell_lock_or_none(self.cell) as held:
                if not held:
                    self.counters.lock_busy += 1
                    return 0
                await f4_jobs.release_orphans(self.jobs)
                await asyncio.to_thread(self.cell.store.clean_temporaries)
                outcomes = f4_jobs.Outcomes()
                runner = JobRunner(
                    self.jobs,
                    f4_jobs.handlers(self.cell, outcomes),
                    queues=[f4_jobs.QUEUE],
                    worker=f4_jobs.worker_name(),
                    lease_s=self.config.lease_s,
                    policies={k.name: f4_jobs.retry_policy(self.config) for k in f4_jobs.KINDS},
                )
                ran = await runner.drain()
                for job_id, error in outcomes.errors.items():
                    log.warning("f4 job %d failed: %s", job_id, error)
            self.counters.job_runs += 1
            self.counters.jobs_run += ran
            return ran

    async def reclaim_due(self) -> int:
        """Deletes the stale files seen for `stale_block_grace_s` (f4.stale.reclaim) when
        the cell's lock is free; how many were deleted."""
        async with self._run_lock:
            due = await asyncio.to_thread(self.watcher.due_stale)
            if not due:
                return 0
            with cell_lock_or_none(self.cell) as held:
                if not held:
                    self.counters.lock_busy += 1
                    return 0
                deleted, nbytes, refused = await asyncio.to_thread(self.watcher.reclaim, due)
            self.counters.stale_files_deleted += deleted
            self.counters.stale_bytes_deleted += nbytes
            self.counters.stale_deletes_refused += refused
            return deleted

    def status(self) -> dict[str, Any]:
        last = None
        if self.last is not None:
            last = asdict(self.last)
            last["lost"] = last["lost"][:100]
            last["blocks_lost"] = len(self.last.lost)
            last["stale"] = last["stale"][:100]
            last["stale_files"] = len(self.last.stale)
            last["stale_bytes"] = sum(r["bytes"] for r in self.last.stale_nodes.values())
        return {
            "interval_s": self.interval_s,
            "node_lost_after_s": self.config.node_lost_after_s,
            "stale_block_grace_s": self.config.stale_block_grace_s,
            "scrub_interval_s": self.config.scrub_interval_s,
            "rebalance_interval_s": self.config.rebalance_interval_s,
            "started_unix_s": self.started_unix_s,
            "last_scrub_unix_s": self.last_scrub_unix_s,
            "counters": asdict(self.counters),
            "last_tick": last,
        }

    def _save(self) -> None:
        write_json_atomic(self.config.work_dir / STATE_FILE, self.status())

    async def _every(self, seconds: Callable[[], float], step: Callable[[], Any]) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counters.errors += 1
                log.exception("f4 watcher step failed")
            await asyncio.sleep(seconds())

    async def _tick_in_loop(self) -> None:
        await self.tick(wait=False)

    def _scrub_wait_s(self) -> float:
        return max(0.0, self.last_scrub_unix_s + self.config.scrub_interval_s - self.clock())

    async def _scrub_loop(self) -> None:
        while True:
            await asyncio.sleep(self._scrub_wait_s())
            try:
                await self.scrub()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counters.errors += 1
                self.last_scrub_unix_s = self.clock()
                log.exception("f4 scrub pass failed")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[WatchService]:
        """Ticks (and scrubs, when scrub_interval_s > 0) in background tasks meanwhile."""
        tasks = [asyncio.create_task(self._every(lambda: self.interval_s, self._tick_in_loop))]
        if self.config.scrub_interval_s:
            tasks.append(asyncio.create_task(self._scrub_loop()))
        try:
            yield self
        finally:
            if self._jobs_task is not None:
                tasks.append(self._jobs_task)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
