"""The cell's coordinator on real processes: f4 storage node processes holding the 14 (or
15) disks, `pinhole f4 watch` repairing a deleted block with no `pinhole f4 rebuild` run
and leaving a node restarted within its grace alone, and `pinhole f4 rebalance` moving
blocks onto an added node while a name node process serves every blob, including a
rebalance killed with -9 mid-move and run again. A node lost for good past its grace has its
blocks and its index copy rebuilt elsewhere (the job done once, verify passing), and when it
comes back its stale index copy is replaced while every read stays exact."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common import credentials
from common.credentials import Credentials, Purpose
from common.db import open_database
from common.jobs import Job, JobState
from f4 import index as index_file
from f4 import jobs as f4_jobs
from f4.block_store import block_name
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.erasure import STRIPE_BLOCKS
from f4.reader import Reader
from f4.rebalance import journal_path
from tests.f4.helpers import Blobs, random_blobs, sealed_volume
from tests.f4.test_node_service import NodeProcess

REPO = Path(__file__).parents[2]
VID = 1
BLOCK_BYTES = 4096  # several stripes from a hundred small blobs
START_S_MAX = 30.0
WAIT_S_MAX = 60.0
NAMES = [f"n{i:02d}" for i in range(STRIPE_BLOCKS)]
# Five storage node processes, a watcher or a name node and the commands: on a shared
# 2-core machine that takes longer than the suite's default.
pytestmark = [pytest.mark.crash, pytest.mark.timeout(360)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != credentials.SECRET_ENV}
    env["PYTHONPATH"] = str(REPO)
    return env


def _wait(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S_MAX) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.1)


@dataclass
class Setup:
    tmp: Path
    secret_file: Path
    operator: Credentials
    procs: list[NodeProcess]
    blobs: Blobs

    @property
    def media(self) -> Path:
        return self.tmp / "media"

    def config(self, **options: Any) -> F4Config:
        nodes = tuple(F4Node(n, f"r{n}", p.url) for p in self.procs for n in p.nodes)
        return F4Config(
            cell_root=self.tmp / "cell",
            haystack_dir=self.tmp / "vols",
            nodes=tuple(sorted(nodes, key=lambda n: n.name)),
            block_bytes=BLOCK_BYTES,
            age_s_min=0.0,
            **{"rebuild_mb_s": 0.0, **options},
        )

    def config_file(self, name: str, **options: Any) -> Path:
        """The TOML of `config(**options)` (as an operator writes it)."""
        config = self.config(**options)
        lines = ["[f4]"]
        for key in ("cell_root", "haystack_dir"):
            lines.append(f'{key} = "{getattr(config, key)}"')
        lines.append(f'cluster_secret_file = "{self.secret_file}"')
        values = {"block_bytes": BLOCK_BYTES, "age_s_min": 0.0, "rebuild_mb_s": 0.0, **options}
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        nodes = ", ".join(
            f'{{ name = "{n.name}", rack = "{n.rack}", url = "{n.url}" }}' for n in config.nodes
        )
        lines.append(f"nodes = [{nodes}]")
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def cell(self) -> Cell:
        return Cell(self.config(), credentials=self.operator)

    def pinhole(self, config: Path, *args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ops.cli", "--config", str(config), "f4", *map(str, args)],
            cwd=self.tmp, env=_env(), capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    def start(self, config: Path, *args: object, listening: str) -> Service:
        log = self.tmp / f"{args[0]}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "ops.cli", "--config", str(config), "f4", *map(str, args)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=self.tmp, env=_env())
        deadline = time.monotonic() + START_S_MAX
        while time.monotonic() < deadline:
            m = re.search(listening + r" on (http://127\.0\.0\.1:\d+)", log.read_text())
            if m:
                return Service(proc, m[1], log)
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise AssertionError(f"{args[0]} did not start: {log.read_text()[-2000:]}")

    def rebuild_jobs(self) -> list[Job]:
        return _jobs(self.media, f4_jobs.REBUILD)

    def rebalance_jobs(self) -> list[Job]:
        return _jobs(self.media, f4_jobs.REBALANCE)


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _jobs(media: Path, kind: Any) -> list[Job]:
    async def go() -> list[Job]:
        db = await open_database(str(media / "media.sqlite3"))
        try:
            return await f4_jobs.jobs_of(db, kind, VID)
        finally:
            await db.close()

    return asyncio.run(go())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    secret_file = credentials.ensure_secret_file(tmp_path / "secret")
    operator = Credentials.from_secret(secret_file.read_bytes().strip())
    blobs = random_blobs(random.Random(11), 120)
    sealed_volume(tmp_path / "vols", VID, blobs)
    (tmp_path / "media").mkdir()  # the API's metadata directory, where the f4 jobs live
    # Dealt round-robin (4 + 4 + 3 + 3): neighbours in the node list on different processes.
    procs = [NodeProcess(tmp_path, p, NAMES[i::4], secret_file) for i, p in enumerate("abcd")]
    s = Setup(tmp_path, secret_file, operator, procs, blobs)
    try:
        for p in procs:
            p.start()
        cell = s.cell()
        try:
            assert cell.migrate(VID)["stripes"] >= 4
        finally:
            cell.close()
        yield s
    finally:
        for p in s.procs:
            p.stop()


def _status(watcher: Service, operator: Credentials) -> dict[str, Any]:
    req = urllib.request.Request(
        watcher.url + "/status", headers={"Authorization": operator.header(Purpose.ADMIN)}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def _read_all(s: Setup) -> None:
    cell = s.cell()
    try:
        reader = Reader(cell.store, cell.keys, racks=cell.config.rack_of)
        for (key, alt), (cookie, data) in s.blobs.items():
            assert reader.read(VID, key, alt, cookie) == data
    finally:
        cell.close()


def _verify_ok(s: Setup) -> bool:
    cell = s.cell()
    try:
        return cell.verify(VID).ok
    finally:
        cell.close()


# -- the watcher -----------------------------------------------------------------------------


def _watch(s: Setup, **options: Any) -> Service:
    config = s.config_file("watch.toml", scrub_interval_s=0.0, **options)
    return s.start(
        config, "watch", "--interval", 0.2, "--port", 0, "--media-data", s.media,
        "--log-level", "warning", listening="f4 watch listening",
    )  # fmt: skip


def test_the_watcher_rebuilds_a_deleted_block_without_a_rebuild_run(setup: Setup) -> None:
    s = setup
    watcher = _watch(s, node_lost_after_s=60.0)
    try:
        first = _wait(
            "a tick that saw the volume",
            lambda: (d := _status(watcher, s.operator))["last_tick"] and d,
        )
        assert first["last_tick"]["blocks"] >= 4 * STRIPE_BLOCKS
        assert first["last_tick"]["blocks_lost"] == 0 and first["last_tick"]["nodes_up"] == 14
        assert s.rebuild_jobs() == []

        cell = s.cell()
        try:
            idx = index_file.load(cell.store, VID)
        finally:
            cell.close()
        node = idx.stripes[1].nodes[3]
        (path,) = [p for p in s.procs if node in p.nodes]
        victim = path.blocks / node / block_name(VID, 1, 3)
        victim.unlink()

        # No `pinhole f4 rebuild`: the watcher queues the job and runs it.
        _wait(
            "the watcher's rebuild job done",
            lambda: [j.state for j in s.rebuild_jobs()] == [JobState.DONE],
        )
        assert _verify_ok(s)
        doc = _wait(
            "the tick that ran the job to end",
            lambda: (d := _status(watcher, s.operator))["counters"]["jobs_run"] >= 1 and d,
        )
        assert doc["counters"]["rebuilds_queued"] == 1
        assert doc["counters"]["jobs_run"] == 1
        assert doc["counters"]["blocks_lost_seen"] >= 1
        assert victim.exists()  # its own node: the disk is fine
        _read_all(s)
        # The next ticks see nothing lost and queue nothing more.
        ticks = doc["counters"]["ticks"]
        later = _wait(
            "two more ticks",
            lambda: (d := _status(watcher, s.operator))["counters"]["ticks"] >= ticks + 2 and d,
        )
        assert later["last_tick"]["blocks_lost"] == 0
        assert len(s.rebuild_jobs()) == 1
        # What it saw, for Prometheus and in `pinhole f4 status --json`.
        status, body = _get(watcher.url + "/metrics", s.operator.header(Purpose.METRICS))
        assert status == 200
        metrics = dict(
            line.rsplit(" ", 1) for line in body.decode().splitlines() if line[:1] != "#"
        )
        assert float(metrics["pinhole_f4_watch_rebuilds_queued_total"]) == 1.0
        assert float(metrics["pinhole_f4_watch_ticks_total"]) >= ticks + 2
        assert float(metrics["pinhole_f4_watch_blocks_lost"]) == 0.0
        assert _get(watcher.url + "/status", s.operator.header(Purpose.READ))[0] == 401
        p = s.pinhole(s.config_file("status.toml"), "status", "--json")
        assert p.returncode == 0, p.stderr
        seen = json.loads(p.stdout)["watcher"]
        assert seen["counters"]["rebuilds_queued"] == 1 and seen["counters"]["ticks"] >= ticks
    finally:
        watcher.stop()


def test_a_node_restarted_within_the_grace_triggers_no_rebuild(setup: Setup) -> None:
    s = setup
    watcher = _watch(s, node_lost_after_s=120.0)
    try:
        _wait("a first tick", lambda: _status(watcher, s.operator)["last_tick"])
        victim = s.procs[1]
        victim.kill()
        seen = _wait(
            "a tick that saw the node down",
            lambda: (
                (d := _status(watcher, s.operator))["last_tick"]["nodes_waiting"]
                == sorted(victim.nodes)
                and d
            ),
        )
        assert seen["last_tick"]["nodes_lost"] == [] and seen["last_tick"]["blocks_lost"] == 0
        victim.start()  # the same port, its disks intact
        back = _wait(
            "a tick after the node came back",
            lambda: (
                (d := _status(watcher, s.operator))["last_tick"]["nodes_up"] == 14
                and d["last_tick"]["tick"] > seen["last_tick"]["tick"]
                and d
            ),
        )
        assert back["last_tick"]["nodes_waiting"] == [] and back["last_tick"]["blocks_lost"] == 0
        assert back["counters"]["rebuilds_queued"] == 0
        assert s.rebuild_jobs() == []
        assert _verify_ok(s)
    finally:
        watcher.stop()


def test_a_node_lost_for_good_is_rebuilt_elsewhere_index_copy_included(setup: Setup) -> None:
    s = setup
    watcher = _watch(s, node_lost_after_s=1.0)
    name = _name_node(s, s.config_file("name.toml"))
    try:
        _wait("a first tick", lambda: _status(watcher, s.operator)["last_tick"])
        assert _read_through(name, s) == []
        victim = s.procs[3]
        config = s.config()
        cell = s.cell()
        try:
            whole = index_file.index_nodes(cell.store, VID, racks=config.rack_of)
            before = index_file.load(cell.store, VID).generation
        finally:
            cell.close()
        (gone,) = set(whole) & set(victim.nodes)  # the lost process holds an index copy
        victim.kill()
        lost = _wait(
            "the node counted lost",
            lambda: (
                (d := _status(watcher, s.operator))["last_tick"]["nodes_lost"]
                == sorted(victim.nodes)
                and d
            ),
        )
        # The tick that first counted the node lost saw its blocks lost; a later tick (the
        # poll may land after the rebuild) no longer does, so read the ticks' running count.
        assert lost["counters"]["blocks_lost_seen"] >= len(victim.nodes)
        # 3 of each stripe's blocks rebuilt on the 11 nodes left (the stripes then share
        # nodes: the cell is short of domains until the node comes back), and the index
        # copy placed on the lost node written on the placement's next node: the job ends
        # done, once, and verify passes while the node stays gone.
        _wait(
            "the watcher's rebuild job done",
            lambda: [j.state for j in s.rebuild_jobs()] == [JobState.DONE],
        )
        (job,) = s.rebuild_jobs()
        assert job.attempts == 1, job
        verified = json.loads(s.pinhole(s.config_file("verify.toml"), "verify", "--json").stdout)
        assert verified["ok"] is True, verified
        cell = s.cell()
        try:
            idx = index_file.load(cell.store, VID)
            placed = index_file.index_nodes(cell.store, VID, racks=config.rack_of, down={gone})
        finally:
            cell.close()
        assert idx.generation > before
        assert all(n not in victim.nodes for info in idx.stripes for n in info.nodes)
        (replacement,) = set(placed) - set(whole)
        (holder,) = [p for p in s.procs if replacement in p.nodes]
        assert (holder.blocks / replacement / f"v{VID}.f4idx").exists()
        assert _read_through(name, s) == []
        _read_all(s)

        # The node comes back with its old copy (and its old blocks): reads stay exact and
        # the watcher's next rebuild puts the current copy back on it.
        victim.start()
        assert _read_through(name, s) == []
        _wait(
            "a second rebuild job done (the stale copy replaced)",
            lambda: [j.state for j in s.rebuild_jobs()] == [JobState.DONE] * 2,
        )
        doc = _status(watcher, s.operator)
        assert doc["counters"]["index_copies_lost_seen"] >= 2
        assert _verify_ok(s)
        cell = s.cell()
        try:
            gens = {n: index_file.peek_generation(cell.store, VID, n) for n in whole}
        finally:
            cell.close()
        assert gens == dict.fromkeys(whole, idx.generation)
        assert not (holder.blocks / replacement / f"v{VID}.f4idx").exists()
        assert _read_through(name, s) == []
        _read_all(s)
    finally:
        name.stop()
        watcher.stop()


# -- rebalancing -----------------------------------------------------------------------------


def _grow(s: Setup) -> NodeProcess:
    """A fifth storage node process with one empty disk, n14."""
    added = NodeProcess(s.tmp, "e", ["n14"], s.secret_file)
    added.start()
    s.procs.append(added)
    return added


def _name_node(s: Setup, config: Path) -> Service:
    return s.start(
        config, "name", "serve", "--secret-file", s.secret_file, "--port", 0,
        listening="f4 name node listening",
    )  # fmt: skip


def _get(url: str, header: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": header})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _read_through(name: Service, s: Setup) -> list[str]:
    """Every blob through the name node; the failures."""
    header = s.operator.header(Purpose.READ)
    failures = []
    for (key, alt), (cookie, data) in s.blobs.items():
        status, body = _get(f"{name.url}/n/{VID}/{key}/{alt}/{cookie:016x}", header)
        if (status, body) != (200, data):
            failures.append(f"{key}/{alt}: {status}")
    return failures


def _copies(s: Setup) -> dict[str, list[str]]:
    """Block name -> the disks holding it, over every process."""
    out: dict[str, list[str]] = {}
    for p in s.procs:
        for f in p.blocks.glob("*/*.blk"):
            out.setdefault(f.name, []).append(f.parent.name)
    return out


def test_rebalance_moves_blocks_onto_an_added_node_while_every_read_succeeds(
    setup: Setup,
) -> None:
    s = setup
    added = _grow(s)
    # Paced so that the reads below overlap the moves: 4 KiB blocks at 4 kB/s.
    config = s.config_file("grown.toml", rebuild_mb_s=0.004)
    name = _name_node(s, config)
    try:
        assert _read_through(name, s) == []
        planned = json.loads(s.pinhole(config, "rebalance", "--dry-run", "--json").stdout)
        (row,) = planned["volumes"]
        assert row["outcome"] == "would move" and planned["loads"]["n14"] == 0
        assert {m["to"] for m in row["moves"]} == {"n14"}
        assert planned["skew"] > planned["slack"]
        assert not (s.media / "media.sqlite3").exists()  # a dry run queues nothing
        assert not journal_path(s.config().work_dir, VID).exists()

        failures: list[str] = []
        reads = 0
        stop = threading.Event()

        def reader() -> None:
            nonlocal reads
            while not stop.is_set():
                failures.extend(_read_through(name, s))
                reads += 1

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            p = s.pinhole(config, "rebalance", "--json", "--media-data", s.media)
        finally:
            stop.set()
            thread.join()
        assert p.returncode == 0, p.stderr + p.stdout
        assert failures == [] and reads >= 2
        doc = json.loads(p.stdout)
        (done,) = doc["volumes"]
        assert done["outcome"] == "done" and done["blocks_moved"] == len(row["moves"]), done
        assert doc["loads_after"]["n14"] == done["blocks_moved"]
        assert doc["skew_after"] <= doc["slack"]
        assert len(list(added.blocks.glob("n14/*.blk"))) == done["blocks_moved"]
        assert all(len(disks) == 1 for disks in _copies(s).values())  # old copies deleted
        # verify reads at rebuild_mb_s: unpaced here.
        verified = json.loads(s.pinhole(s.config_file("unpaced.toml"), "verify", "--json").stdout)
        assert verified["ok"] is True, verified
        assert _read_through(name, s) == []
    finally:
        name.stop()


def test_a_rebalance_killed_mid_move_resumes(setup: Setup) -> None:
    s = setup
    _grow(s)
    slow = s.config_file("slow.toml", rebuild_mb_s=0.001)  # 4 s per 4 KiB block
    journal = journal_path(s.config().work_dir, VID)
    cmd = [sys.executable, "-m", "ops.cli", "--config", str(slow), "f4", "rebalance",
           "--json", "--media-data", str(s.media)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=s.tmp, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait("the rebalance's journal", lambda: journal.exists() or proc.poll() is not None)
        assert proc.poll() is None, "the paced rebalance ended before it could be killed"
    finally:
        proc.kill()
        proc.wait()
    planned = json.loads(journal.read_bytes())["moves"]
    assert planned
    (job,) = s.rebalance_jobs()
    assert job.state == JobState.RUNNING  # its process is gone
    _read_all(s)  # nothing committed yet, or committed whole: reads go on

    fast = s.config_file("fast.toml")
    p = s.pinhole(fast, "rebalance", "--json", "--media-data", s.media)
    assert p.returncode == 0, p.stderr + p.stdout
    (row,) = json.loads(p.stdout)["volumes"]
    assert row["outcome"] == "done" and row["moves_planned"] == len(planned), row
    assert row["blocks_moved"] + row["blocks_found_done"] == len(planned)
    assert not journal.exists()
    (job,) = s.rebalance_jobs()
    assert job.state == JobState.DONE
    copies = _copies(s)
    assert all(len(disks) == 1 for disks in copies.values()), copies
    assert sum(1 for disks in copies.values() if disks == ["n14"]) == len(planned)
    assert not list(s.tmp.glob("*/blocks/*/*.tmp"))  # no temporary left behind
    assert _verify_ok(s)
    _read_all(s)
