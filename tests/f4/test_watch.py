"""The watcher's look at a cell (f4/watch.py) on local directories, with a clock the test
moves: a missing block is lost at once, a silent node only after its grace, a scrub finds
what listings cannot (a corrupt block), a rebalance check names a skewed volume, and the
service queues a rebalance at its cadence and runs it only when the cell's lock is free."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.db import migrate, open_database
from common.jobs import JobState, JobStore
from common.jobs.local import Throttle
from f4 import index as index_file
from f4 import jobs as f4_jobs
from f4.block_store import block_name
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.erasure import STRIPE_BLOCKS
from f4.watch import Lost, Watcher, WatchService
from tests.f4.helpers import random_blobs, sealed_volume

VID = 1
GRACE_S = 60.0


def _config(tmp: Path, nodes: int = STRIPE_BLOCKS) -> F4Config:
    return F4Config(
        cell_root=tmp / "cell",
        haystack_dir=tmp / "vols",
        nodes=tuple(F4Node(f"n{i:02d}", f"r{i:02d}") for i in range(nodes)),
        block_bytes=8192,
        rebuild_mb_s=0.0,
        age_s_min=0.0,
        node_lost_after_s=GRACE_S,
    )


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[Cell]:
    sealed_volume(tmp_path / "vols", VID, random_blobs(random.Random(3), 120))
    c = Cell(_config(tmp_path))
    try:
        c.migrate(VID)
        yield c
    finally:
        c.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_missing_block_is_lost_at_once_a_silent_node_after_its_grace(
    cell: Cell, tmp_path: Path
) -> None:
    clock = Clock()
    watcher = Watcher(cell, clock=clock)
    first = watcher.tick(1)
    stripes = len(index_file.load(cell.store, VID).stripes)
    assert (first.nodes_up, first.volumes, first.blocks) == (14, 1, stripes * STRIPE_BLOCKS)
    assert first.lost == [] and first.nodes_waiting == first.nodes_lost == []

    idx = index_file.load(cell.store, VID)
    node = idx.stripes[0].nodes[5]
    (cell.config.blocks_dir / node / block_name(VID, 0, 5)).unlink()
    assert watcher.tick(2).lost == [Lost(VID, 0, 5, node, "missing")]

    silent = idx.stripes[0].nodes[7]
    moved = tmp_path / "away"
    shutil.move(cell.config.blocks_dir / silent, moved)  # the node stops answering
    clock.now += 1
    waiting = watcher.tick(3)
    assert waiting.nodes_waiting == [silent] and waiting.nodes_lost == []
    assert [x.problem for x in waiting.lost] == ["missing"]
    clock.now += GRACE_S - 2
    assert watcher.tick(4).nodes_waiting == [silent]  # still within the grace
    shutil.move(moved, cell.config.blocks_dir / silent)  # back: the grace starts over
    clock.now += 10
    assert watcher.tick(5).nodes_waiting == []
    shutil.move(cell.config.blocks_dir / silent, moved)
    clock.now += 1
    assert watcher.tick(6).nodes_waiting == [silent]
    clock.now += GRACE_S
    lost = watcher.tick(7)
    assert lost.nodes_lost == [silent] and lost.nodes_waiting == []
    on_silent = {(x.stripe, x.block) for x in lost.lost if x.problem == "node lost"}
    assert on_silent == {
        (s, b)
        for s, info in enumerate(idx.stripes)
        for b, n in enumerate(info.nodes)
        if n == silent
    }


def test_a_scrub_finds_a_corrupt_block_the_listings_cannot(cell: Cell) -> None:
    watcher = Watcher(cell)
    idx = index_file.load(cell.store, VID)
    node = idx.stripes[1].nodes[2]
    path = cell.config.blocks_dir / node / block_name(VID, 1, 2)
    raw = bytearray(path.read_bytes())
    raw[4000] ^= 0x01
    path.write_bytes(bytes(raw))
    assert watcher.tick(1).lost == []  # present in its listing: a tick cannot tell
    throttle = Throttle()
    found = watcher.scrub(throttle)
    assert [(x.volume, x.stripe, x.block, x.node) for x in found] == [(VID, 1, 2, node)]
    assert "corrupt" in found[0].problem or "checksum" in found[0].problem, found[0]
    # Every block was read and paid for.
    assert throttle.bytes == sum(i.block_length for i in idx.stripes) * STRIPE_BLOCKS


def test_a_rebalance_check_names_a_volume_once_a_node_was_added(cell: Cell, tmp_path: Path) -> None:
    assert Watcher(cell).unbalanced() == []
    grown = _config(tmp_path, STRIPE_BLOCKS + 1)
    (grown.blocks_dir / "n14").mkdir()
    bigger = Cell(grown)
    try:
        assert Watcher(bigger).unbalanced() == [VID]
        bigger.rebalance(VID)
        assert Watcher(bigger).unbalanced() == []
    finally:
        bigger.close()


def test_the_service_queues_a_rebalance_at_its_cadence_and_runs_it_under_the_lock(
    cell: Cell, tmp_path: Path
) -> None:
    grown = replace(_config(tmp_path, STRIPE_BLOCKS + 1), rebalance_interval_s=0.01)
    (grown.blocks_dir / "n14").mkdir()
    bigger = Cell(grown)

    async def go() -> None:
        db = await open_database(str(tmp_path / "media.sqlite3"))
        try:
            await migrate(db, f4_jobs.COMPONENT, f4_jobs.MIGRATIONS)
            jobs = JobStore(db)
            service = WatchService(bigger, jobs, interval_s=1.0)
            # Another process holds the cell's lock: the job is queued, left to it.
            held = os.open(grown.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(held, fcntl.LOCK_EX)
                service.last_rebalance_unix_s = 0.0
                await service.tick()
            finally:
                os.close(held)
            (job,) = await f4_jobs.jobs_of(db, f4_jobs.REBALANCE, VID)
            assert job.state == JobState.QUEUED
            assert service.counters.rebalances_queued == 1
            assert service.counters.lock_busy == 1 and service.counters.jobs_run == 0
            # The lock free: the next tick runs it (and queues no second one meanwhile).
            service.last_rebalance_unix_s = 0.0
            await service.tick()
            (job,) = await f4_jobs.jobs_of(db, f4_jobs.REBALANCE, VID)
            assert job.state == JobState.DONE
            assert service.counters.rebalances_queued == 1 and service.counters.jobs_run == 1
            assert service.status()["last_tick"]["tick"] == 2
        finally:
            await db.close()

    try:
        asyncio.run(go())
        assert Watcher(bigger).unbalanced() == []
        assert bigger.verify(VID).ok
    finally:
        bigger.close()
