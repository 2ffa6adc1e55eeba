"""Stale files on real processes (f4/stale.py): a storage node process killed with -9 is
lost, its blocks are rebuilt on the other nodes by `pinhole f4 watch`, and it comes back
with its old disks. Its old blocks and sidecars are reported with their exact byte counts
(the watcher's /status and /metrics, `pinhole f4 status --json`, `pinhole f4 reclaim
--dry-run`), `pinhole f4 reclaim` exits 75 while the cell's lock is held and deletes one
node's files when asked, and a watcher deletes the rest once they have been stale for
[f4] stale_block_grace_s: the bytes under the node's disk directories drop by exactly
that much, verify passes and every blob reads back byte-exact."""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any

import pytest

from common.credentials import Purpose
from common.jobs import JobState
from f4 import index as index_file
from ops.cli_support import EXIT_LOCKED
from tests.f4.test_coordinator import (
    Setup,
    _get,
    _read_all,
    _status,
    _wait,
    _watch,
    setup,  # noqa: F401  (the fixture: four storage node processes, a migrated volume)
)
from tests.f4.test_node_service import NodeProcess

VID = 1
pytestmark = [pytest.mark.crash, pytest.mark.timeout(240)]


def _disk_files(proc: NodeProcess) -> dict[str, dict[str, int]]:
    """Per node of the process: its block and sidecar files and their bytes."""
    out: dict[str, dict[str, int]] = {}
    for node in proc.nodes:
        files = [p for p in (proc.blocks / node).iterdir() if p.suffix in (".blk", ".sum")]
        out[node] = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    return out


def _bytes_under(proc: NodeProcess) -> int:
    return sum(p.stat().st_size for p in proc.blocks.rglob("*") if p.is_file())


def _metrics(url: str, header: str) -> dict[str, float]:
    status, body = _get(url + "/metrics", header)
    assert status == 200
    return {
        k: float(v)
        for k, v in (line.rsplit(" ", 1) for line in body.decode().splitlines() if line[:1] != "#")
    }


def _json(p: Any) -> dict[str, Any]:
    assert p.returncode == 0, p.stdout + p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def test_a_node_back_with_its_old_disks_has_its_stale_blocks_reported_and_reclaimed(
    setup: Setup,  # noqa: F811
) -> None:
    s = setup
    victim = s.procs[3]  # n03, n07, n11
    watcher = _watch(s, node_lost_after_s=1.0, stale_block_grace_s=3600.0)
    try:
        _wait("a first tick", lambda: _status(watcher, s.operator)["last_tick"])
        victim.kill()
        _wait(
            "the rebuild of the lost node's blocks done",
            lambda: [j.state for j in s.rebuild_jobs()] == [JobState.DONE],
        )
        cell = s.cell()
        try:
            idx = index_file.load(cell.store, VID)
        finally:
            cell.close()
        assert all(n not in victim.nodes for info in idx.stripes for n in info.nodes)
        # Every block and sidecar on its disks is now placed elsewhere: all stale once back.
        stale = _disk_files(victim)
        total_files = sum(r["files"] for r in stale.values())
        total_bytes = sum(r["bytes"] for r in stale.values())
        assert total_files >= 2 * len(victim.nodes) and total_bytes > 0

        victim.start()  # the same port, its old disks
        # Its stale index copy is replaced by a second rebuild (a placed copy: never stale);
        # the blocks and sidecars are reported, and kept (the grace is an hour).
        doc = _wait(
            "the stale files reported",
            lambda: (
                [j.state for j in s.rebuild_jobs()] == [JobState.DONE] * 2
                and (d := _status(watcher, s.operator))["last_tick"]["stale_nodes"] == stale
                and d
            ),
        )
        last = doc["last_tick"]
        assert last["stale_files"] == total_files and last["stale_bytes"] == total_bytes
        assert {f["node"] for f in last["stale"]} == set(victim.nodes)
        assert all(f["placed"] not in victim.nodes for f in last["stale"])
        metrics = _metrics(watcher.url, s.operator.header(Purpose.METRICS))
        for node, row in stale.items():
            assert metrics[f'pinhole_f4_watch_stale_bytes{{node="{node}"}}'] == row["bytes"]
            assert metrics[f'pinhole_f4_watch_stale_files{{node="{node}"}}'] == row["files"]
        assert metrics["pinhole_f4_watch_stale_files_deleted_total"] == 0.0
    finally:
        watcher.stop()
    assert _disk_files(victim) == stale
    before = _bytes_under(victim)  # its index copy rewritten at the newest generation

    # The operator's view and commands.
    config = s.config_file("ops.toml")
    shown = _json(s.pinhole(config, "status", "--json"))["stale"]
    assert shown == {"files": total_files, "bytes": total_bytes, "nodes": stale}
    dry = _json(s.pinhole(config, "reclaim", "--dry-run", "--json"))
    assert (dry["files"], dry["bytes"], dry["nodes"]) == (total_files, total_bytes, stale)
    assert _disk_files(victim) == stale
    fd = os.open(s.tmp / "cell" / "f4.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = s.pinhole(config, "reclaim", "--json")
        assert locked.returncode == EXIT_LOCKED, locked.stderr
    finally:
        os.close(fd)
    first = victim.nodes[0]
    done = _json(s.pinhole(config, "reclaim", "--node", first, "--json"))
    assert done["deleted"] == stale[first]["files"] and done["refused"] == []
    assert done["bytes_deleted"] == stale[first]["bytes"]
    assert _disk_files(victim)[first] == {"files": 0, "bytes": 0}

    # A watcher with a short grace deletes the rest.
    rest_files = total_files - stale[first]["files"]
    rest_bytes = total_bytes - stale[first]["bytes"]
    watcher = _watch(s, node_lost_after_s=60.0, stale_block_grace_s=1.0)
    try:
        doc = _wait(
            "the watcher's deletes",
            lambda: (
                (d := _status(watcher, s.operator))["counters"]["stale_files_deleted"] == rest_files
                and d
            ),
        )
        assert doc["counters"]["stale_bytes_deleted"] == rest_bytes
        assert doc["counters"]["stale_deletes_refused"] == 0
        _wait(
            "a tick that sees nothing stale",
            lambda: (d := _status(watcher, s.operator)["last_tick"])["stale_files"] == 0 and d,
        )
    finally:
        watcher.stop()
    assert all(r == {"files": 0, "bytes": 0} for r in _disk_files(victim).values())
    assert _bytes_under(victim) == before - total_bytes
    verified = _json(s.pinhole(config, "verify", "--json"))
    assert verified["ok"] is True, verified
    _read_all(s)
    assert _json(s.pinhole(config, "status", "--json"))["stale"]["files"] == 0
