"""The directory's f4 tier against a real directory and real store nodes: a sealed volume's
copy on an f4 name node is begun, gets every delete, and takes over the volume's reads at
the switch; the Haystack replicas are released then, or by the releases loop once a store
that was down returns.

The f4 name node here is `F4Node`: an aiohttp server that heartbeats with role f4 and
answers the store's delete protocol (`DELETE /n/{vid}/{key}[/{alt}]`) for the volumes it
serves, recording each delete."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from common.jobs import ManualClock
from directory.client import DirectoryClient
from directory.deletes import delete_pass
from directory.errors import DirectoryError
from directory.moves import balance_plan, replication_plan
from directory.tiering import release_pass
from directory.writer import BlobWriter
from store.client import StoreClientError
from tests.conftest import creds
from tests.directory.conftest import (
    SECRET,
    Cluster,
    SimNode,
    eventually,
    fast_config,
    running_cluster,
)

F4_NODE = "f4-1"


class F4Node:
    """An f4 name node as the directory sees it: heartbeats (role f4, its volumes sealed)
    and the store's needle delete protocol. `serving`: the volumes it answers for (others
    answer 404 volume_not_found, as a name node does before a migration lands)."""

    def __init__(self, directory_url: str, node_id: str = F4_NODE) -> None:
        self.directory_url = directory_url
        self.node_id = node_id
        self.serving: set[int] = set()
        self.deletes: list[tuple[int, int, int | None]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _delete(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Pinhole-Internal "):
            return web.json_response({"error": {"code": "unauthorized", "message": ""}}, status=401)
        vid = int(request.match_info["vid"])
        if vid not in self.serving:
            body = {"error": {"code": "volume_not_found", "message": f"no volume {vid}"}}
            return web.json_response(body, status=404)
        alt = request.match_info.get("alt")
        self.deletes.append(
            (vid, int(request.match_info["key"]), None if alt is None else int(alt))
        )
        return web.json_response({"deleted": 1})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_delete("/n/{vid}/{key}", self._delete)
        app.router.add_delete("/n/{vid}/{key}/{alt}", self._delete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        await self.beat_once()

    async def beat_once(self) -> None:
        """One heartbeat with role f4, listing the served volumes as sealed."""
        async with DirectoryClient(self.directory_url, credentials=creds(SECRET)) as c:
            await c.heartbeat(
                node_id=self.node_id,
                role="f4",
                url=self.url,
                volumes=[{"volume_id": v, "mode": "sealed"} for v in sorted(self.serving)],
            )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def running_f4(cluster: Cluster) -> AsyncIterator[F4Node]:
    node = F4Node(cluster.url)
    try:
        await node.start()
        yield node
    finally:
        await node.stop()


async def _seal(cluster: Cluster, lv: dict[str, Any]) -> None:
    """Seals the volume on each of its store nodes, and lets each tell the directory."""
    for r in lv["replicas"]:
        node = cluster.node(r["node_id"])
        async with node.client() as store:
            await store.set_mode(lv["volume_id"], "sealed")
        await node.beat_once()


async def _advance(cluster: Cluster, f4: F4Node, seconds: float) -> None:
    """Cluster.advance, with the f4 node beating too (it stays alive)."""
    await cluster.advance(seconds)
    await f4.beat_once()


def _volume_files(node: SimNode, vid: int) -> list[Path]:
    return sorted(node.data_dir.rglob(f"v{vid}.*"))


async def _heartbeat_sizes(cluster: Cluster, vid: int) -> dict[str, int]:
    """The volume's size on each store node as its heartbeat reports it (a fresh beat)."""
    sizes = {}
    for node in cluster.nodes:
        if node.node is None:
            continue
        await node.beat_once()
        for v in node.node.statistics().volumes:
            if v.volume_id == vid:
                sizes[node.node_id] = v.size_bytes
    return sizes


async def test_begin_switch_and_abort_refuse_what_does_not_apply(tmp_path: Path) -> None:
    config = fast_config({"data_dir": tmp_path / "directory"})
    async with (
        running_cluster(config, tmp_path, stores=4, loops=False, clock=ManualClock()) as cluster,
        running_f4(cluster) as f4,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        vid = lv["volume_id"]
        holders = sorted(r["node_id"] for r in lv["replicas"])
        (spare,) = {n.node_id for n in cluster.nodes} - set(holders)
        with pytest.raises(DirectoryError) as e:
            await c.f4_begin(vid, F4_NODE)
        assert (e.value.status, e.value.code) == (409, "volume_writable")
        await _seal(cluster, lv)
        for node_id, status, code in [
            ("store-1", 400, "bad_request"),  # not an f4 node
            ("nobody", 404, "node_not_found"),
        ]:
            with pytest.raises(DirectoryError) as e:
                await c.f4_begin(vid, node_id)
            assert (e.value.status, e.value.code) == (status, code)
        with pytest.raises(DirectoryError) as e:
            await c.f4_begin(vid + 1, F4_NODE)
        assert (e.value.status, e.value.code) == (404, "volume_not_found")
        with pytest.raises(DirectoryError) as e:
            await c.f4_switch(vid, F4_NODE)  # nothing begun
        assert (e.value.status, e.value.code) == (409, "conflict")
        with pytest.raises(DirectoryError) as e:
            await c.heartbeat(node_id="f4-2", role="f5", url=f4.url)
        assert e.value.status == 400 and "'f4'" in e.value.message
        with pytest.raises(DirectoryError) as e:
            await c.heartbeat(
                node_id="f4-2",
                role="f4",
                url=f4.url,
                volumes=[{"volume_id": 1, "mode": "writable"}],
            )
        assert e.value.status == 400 and "sealed" in e.value.message

        begun = await c.f4_begin(vid, F4_NODE)
        assert begun == await c.f4_begin(vid, F4_NODE)  # idempotent
        f4_replica = [r for r in begun["replicas"] if r["node_id"] == F4_NODE]
        assert f4_replica and f4_replica[0]["state"] == "copying"
        assert (begun["state"], begun["writable"], begun["reason"]) == (
            "active",
            False,
            "f4_copying",
        )
        # The plans leave the f4 copy alone: not a move to resume, not a load to balance.
        state = await cluster.directory.state()
        assert replication_plan(state) == [] and balance_plan(state) == []
        assert state.replica_counts()[spare] == 0 and F4_NODE not in state.replica_counts()
        # A store replica lost meanwhile is replaced among the stores; the f4 copy (copying
        # too) is neither resumed as a move nor a source, target or replaced replica.
        lost = cluster.node(holders[0])
        await lost.pause_heartbeats()
        await _advance(cluster, f4, config.node_timeout_s)
        (move,) = replication_plan(await cluster.directory.state())
        assert (move["target"]["node_id"], move["replaces"]) == (spare, lost.node_id)
        assert move["source"]["node_id"] in holders[1:]
        lost.resume_heartbeats()
        await lost.beat_once()
        # A repair report about the f4 copy is not the directory's to schedule.
        with pytest.raises(DirectoryError) as e:
            await c.report_repair(vid, 5, 0, F4_NODE, "read")
        assert (e.value.status, e.value.code) == (409, "repaired_by_f4")
        # The moves' endpoints refuse the f4 copy: the switch owns it.
        with pytest.raises(DirectoryError) as e:
            await c.replica_ready(vid, F4_NODE)
        assert e.value.status == 409

        aborted = await c.f4_abort(vid, F4_NODE)
        assert sorted(r["node_id"] for r in aborted["replicas"]) == holders
        assert aborted["reason"] == "replica_sealed"
        assert (await c.f4_abort(vid, F4_NODE))["replicas"] == aborted["replicas"]
        nodes = {n["node_id"]: n for n in await c.nodes()}
        assert nodes[F4_NODE]["role"] == "f4" and nodes[F4_NODE]["alive"]
        assert nodes[F4_NODE]["failure_domain"] == "-/-/-"


async def test_a_volume_moves_to_f4_and_its_haystack_replicas_are_released(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    config = fast_config(backend, delete_retry_s_max=60.0)
    async with (
        running_cluster(config, tmp_path, stores=3, loops=False, clock=ManualClock()) as cluster,
        running_f4(cluster) as f4,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        vid = lv["volume_id"]
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            refs = [await writer.put(key, 0, b"photo %d" % key * 1000) for key in (11, 12, 13)]
        await _seal(cluster, lv)
        f4.serving.add(vid)
        await f4.beat_once()
        await c.f4_begin(vid, F4_NODE)

        # A delete reaches every store replica and the f4 copy.
        assert await c.delete(vid, 11) == {"replicas_done": 4, "replicas_pending": 0}
        assert f4.deletes == [(vid, 11, None)]
        for node in cluster.nodes:
            async with node.client() as store:
                with pytest.raises(StoreClientError) as e:
                    await store.get(vid, 11, 0, refs[0].cookie)
                assert e.value.status == 404

        # A store that is down owes a delete: the switch waits for it.
        victim = cluster.node("store-3")
        await victim.stop()
        assert await c.delete(vid, 12, 0) == {"replicas_done": 3, "replicas_pending": 1}
        assert f4.deletes[-1] == (vid, 12, 0)
        with pytest.raises(DirectoryError) as e:
            await c.f4_switch(vid, F4_NODE)
        assert (e.value.status, e.value.code) == (409, "deletes_pending")
        assert "1 deletes" in e.value.message
        await _advance(cluster, f4, config.node_timeout_s)  # store-3 is seen down
        await victim.start()  # back: its delete is due at its first heartbeat
        await delete_pass(cluster.directory)
        assert (await c.status())["pending_deletes"] == 0

        # The f4 node must be alive to take the reads.
        await cluster.advance(config.node_timeout_s)  # the f4 node alone stays silent
        with pytest.raises(DirectoryError) as e:
            await c.f4_switch(vid, F4_NODE)
        assert (e.value.status, e.value.code) == (409, "conflict") and "down" in e.value.message
        await f4.beat_once()

        # store-3 goes down again just before the switch: its release fails.
        sizes = await _heartbeat_sizes(cluster, vid)
        assert set(sizes) == {"store-1", "store-2", "store-3"} and min(sizes.values()) > 0
        await victim.stop()
        switched = await c.f4_switch(vid, F4_NODE)
        released = {r["node_id"]: r for r in switched["released"]}
        assert set(released) == {"store-1", "store-2", "store-3"}
        for node_id in ("store-1", "store-2"):
            assert released[node_id]["ok"] and released[node_id]["error"] is None
            assert released[node_id]["size_bytes"] == sizes[node_id]
        assert not released["store-3"]["ok"] and released["store-3"]["error"]
        assert switched["bytes_released"] == sizes["store-1"] + sizes["store-2"]
        assert (switched["state"], switched["writable"], switched["reason"]) == (
            "f4",
            False,
            "f4",
        )
        assert [(r["node_id"], r["state"], r["url"], r["alive"]) for r in switched["replicas"]] == [
            (F4_NODE, "ready", f4.url, True)
        ]
        assert await c.volume(vid) == {
            k: v for k, v in switched.items() if k not in ("released", "bytes_released")
        }
        for node_id in ("store-1", "store-2"):
            assert _volume_files(cluster.node(node_id), vid) == []
        assert _volume_files(victim, vid) != []

        # Deletes now go to the f4 node alone.
        assert await c.delete(vid, 13) == {"replicas_done": 1, "replicas_pending": 0}
        assert f4.deletes[-1] == (vid, 13, None)

        # store-3 returns still holding the volume: the releases loop releases it.
        await _advance(cluster, f4, config.node_timeout_s)
        await victim.start()
        state = await cluster.directory.state()
        assert vid in state.nodes["store-3"].volumes
        await release_pass(cluster.directory)
        assert _volume_files(victim, vid) == []
        await victim.beat_once()
        assert vid not in (await cluster.directory.state()).nodes["store-3"].volumes
        assert cluster.directory.counters["f4_releases"] == 3

        # A second switch: the same shape, nothing left to release.
        again = await c.f4_switch(vid, F4_NODE)
        assert (again["released"], again["bytes_released"], again["state"]) == ([], 0, "f4")

        # An f4 volume: no abort, no Haystack replica, no repair, no plan, no growth count.
        with pytest.raises(DirectoryError) as e:
            await c.f4_abort(vid, F4_NODE)
        assert (e.value.status, e.value.code) == (409, "volume_in_f4")
        with pytest.raises(DirectoryError) as e:
            await c.add_replica(vid, "store-1")
        assert (e.value.status, e.value.code) == (409, "volume_in_f4")
        with pytest.raises(DirectoryError) as e:
            await c.report_repair(vid, 12, 1, F4_NODE, "read")
        assert (e.value.status, e.value.code) == (409, "repaired_by_f4")
        state = await cluster.directory.state()
        assert replication_plan(state) == [] and balance_plan(state) == []
        assert state.replica_counts() == {"store-1": 0, "store-2": 0, "store-3": 0}
        status = await c.status()
        assert status["volumes_by_state"] == {"creating": 0, "active": 0, "f4": 1}
        assert status["under_replicated_volumes"] == 0
        assert 'pinhole_directory_volumes_by_state{state="f4"} 1.0' in await c.metrics()


async def test_the_releases_loop_runs_with_the_others(tmp_path: Path) -> None:
    """The running directory's own releases loop (not a pass called by the test) releases
    what a store node reports of an f4 volume."""
    config = fast_config({"data_dir": tmp_path / "directory"})
    async with (
        running_cluster(config, tmp_path, stores=3) as cluster,
        running_f4(cluster) as f4,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        vid = lv["volume_id"]
        await _seal(cluster, lv)
        f4.serving.add(vid)
        await c.f4_begin(vid, F4_NODE)
        # store-2's copy is out of reach at the switch: the directory knows it by a URL
        # where nothing listens (the node runs on, its heartbeats paused).
        kept = cluster.node("store-2")
        await kept.pause_heartbeats()
        url, kept.url = kept.url, "http://127.0.0.1:1"
        await kept.beat_once()
        await f4.beat_once()  # alive on the directory's clock however long the above took
        switched = await c.f4_switch(vid, F4_NODE)
        assert [r["node_id"] for r in switched["released"] if not r["ok"]] == ["store-2"]
        assert _volume_files(kept, vid) != []
        kept.url = url
        kept.resume_heartbeats()

        async def released() -> bool:
            await f4.beat_once()  # the f4 node stays alive on the directory's clock
            return not _volume_files(kept, vid)

        await eventually(released, what="the releases loop deletes store-2's copy")
        async with kept.client() as store:
            assert vid not in {v["volume_id"] for v in await store.volumes()}
        assert cluster.directory.passes["releases"] > 0
