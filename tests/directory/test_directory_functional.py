"""The directory's HTTP API against real in-process store nodes, on SQLite and on
PostgreSQL (every test runs on both through the `backend` fixture)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from common.credentials import Purpose
from common.jobs import ManualClock
from directory import schema
from directory.client import DirectoryClient
from directory.deletes import delete_pass
from directory.errors import DirectoryError, NoWritableVolume
from directory.growth import allocate, growth_pass
from directory.health import health_pass
from directory.repairs import repair_pass
from directory.schema import LogicalVolumeState, RepairState, ReplicaState
from directory.server import running_directory
from directory.service import LOOPS, Directory
from directory.tiering import release_pass
from directory.writer import BlobWriter
from store.client import StoreClientError
from tests.conftest import auth, creds
from tests.directory.conftest import SECRET, Cluster, eventually, fast_config, running_cluster


async def _lv(cluster: Cluster, vid: int) -> dict[str, Any]:
    async with cluster.client() as c:
        return await c.volume(vid)


async def test_heartbeat_registers_and_lists_nodes(backend: dict[str, Any], tmp_path: Path) -> None:
    async with (
        running_cluster(fast_config(backend), tmp_path, loops=False) as cluster,
        cluster.client() as c,
    ):
        answer = await c.heartbeat(node_id="cache-1", role="cache", url="http://127.0.0.1:1")
        assert answer == {"interval_s": 0.1}
        nodes = {n["node_id"]: n for n in await c.nodes()}
        assert set(nodes) == {"store-1", "store-2", "store-3", "store-4", "cache-1"}
        assert nodes["store-3"]["failure_domain"] == "dc1/rack2/host3"
        assert nodes["store-1"]["alive"] and nodes["store-1"]["free_bytes"] > 0
        assert await c.caches() == [{"node_id": "cache-1", "url": "http://127.0.0.1:1"}]
        status = await c.status()
        assert status["nodes_alive"] == 5
        assert status["alerts"] == ["no_writable_volume"]
        assert "pinhole_directory_nodes_alive 5.0" in await c.metrics()


async def test_bad_requests_answer_json_errors(backend: dict[str, Any], tmp_path: Path) -> None:
    config = fast_config(backend, request_body_bytes_max=64 * 1024)
    async with running_cluster(config, tmp_path, stores=0, loops=False) as cluster:
        async with cluster.client() as c:
            with pytest.raises(DirectoryError) as e:
                await c.heartbeat(node_id="x", role="store", url="http://h:1", failure_domain="a/b")
            assert (e.value.status, e.value.code) == (400, "bad_request")
            assert "failure_domain" in str(e.value)
            with pytest.raises(DirectoryError) as e:
                await c.volume(7)
            assert (e.value.status, e.value.code) == (404, "volume_not_found")
            with pytest.raises(DirectoryError) as e:
                await c.create_volumes(1)
            assert (e.value.status, e.value.code) == (409, "no_capacity")
        async with DirectoryClient(cluster.url) as anonymous:  # no credential
            with pytest.raises(DirectoryError) as e:
                await anonymous.create_volumes(1)
            assert (e.value.status, e.value.code) == (401, "unauthorized")
        async with aiohttp.ClientSession() as s:
            async with s.get(cluster.url + "/nope") as resp:
                assert resp.status == 401  # without a credential no route is told apart
            async with s.get(cluster.url + "/nope", headers=auth(SECRET, Purpose.ADMIN)) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "not_found"
            node = auth(SECRET, Purpose.NODE)
            async with s.post(
                cluster.url + "/heartbeat", data=b"x" * 100_000, headers=node
            ) as resp:
                assert resp.status == 413
                assert (await resp.json())["error"]["code"] == "body_too_large"
            write = auth(SECRET, Purpose.WRITE)
            async with s.post(cluster.url + "/deletes", data=b"{", headers=write) as resp:
                assert resp.status == 400


async def test_each_route_takes_the_credential_of_its_purpose(tmp_path: Path) -> None:
    config = fast_config({"data_dir": tmp_path / "directory"})
    async with running_cluster(config, tmp_path, stores=0, loops=False) as cluster:
        url = cluster.url
        read, write, node, admin, metrics = (
            auth(SECRET, p)
            for p in (Purpose.READ, Purpose.WRITE, Purpose.NODE, Purpose.ADMIN, Purpose.METRICS)
        )
        beat = {
            "node_id": "n1",
            "role": "cache",
            "url": "http://127.0.0.1:9",
            "failure_domain": "x",
        }
        cases = [
            ("GET", "/healthz", None, [({}, 200)]),
            ("GET", "/status", None, [({}, 401), (read, 401), (write, 401), (admin, 200)]),
            ("GET", "/metrics", None, [({}, 401), (read, 401), (metrics, 200), (admin, 200)]),
            ("GET", "/nodes", None, [(read, 401), (node, 401), (admin, 200)]),
            ("GET", "/volumes", None, [(read, 401), (write, 401), (admin, 200)]),
            (
                "GET",
                "/volumes/1",
                None,
                [({}, 401), (node, 401), (read, 404), (write, 404), (admin, 404)],
            ),
            ("GET", "/caches", None, [({}, 401), (write, 401), (read, 200)]),
            ("GET", "/writable", None, [({}, 401), (read, 401), (write, 200)]),
            ("POST", "/heartbeat", beat, [({}, 401), (read, 401), (write, 401), (node, 200)]),
            ("POST", "/volumes", {"count": 1}, [(write, 401), (node, 401), (admin, 409)]),
            ("GET", "/repairs", None, [(read, 401), (admin, 200)]),
            ("GET", "/plan/replication", None, [(write, 401), (admin, 200)]),
        ]
        async with aiohttp.ClientSession() as s:
            for method, path, body, expected in cases:
                for headers, status in expected:
                    async with s.request(method, url + path, json=body, headers=headers) as r:
                        assert r.status == status, (method, path, headers, await r.text())


async def test_lookups_answer_from_a_snapshot(tmp_path: Path) -> None:
    config = fast_config(
        {"data_dir": tmp_path / "directory"}, lookup_snapshot_s=60.0, lookup_reload_s_min=0.2
    )
    read = auth(SECRET, Purpose.READ)
    async with (
        running_cluster(config, tmp_path, stores=3, loops=False, clock=ManualClock()) as cluster,
        cluster.client() as c,
        aiohttp.ClientSession(headers=read) as s,
    ):
        await c.create_volumes(1)
        directory = cluster.directory
        async with s.get(cluster.url + "/volumes/1") as r:
            assert r.status == 200 and r.headers["X-Pinhole-Volume-Id-Max"] == "1"
        loads = directory.lookup_loads

        async def lookup(vid: int) -> int:
            async with s.get(f"{cluster.url}/volumes/{vid}") as r:
                assert r.headers["X-Pinhole-Volume-Id-Max"] == "1"
                return r.status

        # Below the highest id: answered from the snapshot, no load at all.
        assert {await lookup(1) for _ in range(50)} == {200}
        assert directory.lookup_loads == loads
        # Above it: the database's highest id is read, at most once per
        # lookup_reload_s_min (the clock stands still here), and no state is loaded (no
        # volume was created).
        checks = directory.id_max_checks
        statuses = await asyncio.gather(*(lookup(v) for v in range(2, 502)))
        assert set(statuses) == {404}
        assert directory.lookup_loads == loads
        assert directory.id_max_checks - checks == 1
        # A volume created since the snapshot is not seen before lookup_reload_s_min has
        # passed, and is found by the first lookup after.
        await c.create_volumes(1)
        assert await lookup(2) == 404
        await cluster.advance(0.2)
        assert (await c.volume(2))["volume_id"] == 2
        assert directory.id_max_checks - checks == 2


async def test_create_volumes_places_replicas_and_creates_them(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    async with (
        running_cluster(fast_config(backend), tmp_path, loops=False) as cluster,
        cluster.client() as c,
    ):
        created = await c.create_volumes(2)
        assert [v["volume_id"] for v in created] == [1, 2]
        for lv in created:
            assert lv["writable"], lv
            replicas = lv["replicas"]
            assert len(replicas) == 3
            domains = sorted(r["failure_domain"] for r in replicas)
            racks = [d.split("/")[1] for d in domains]
            assert racks.count("rack1") in (1, 2) and len(set(domains)) == 3
            for r in replicas:
                node = cluster.node(r["node_id"]).node
                assert node is not None and lv["volume_id"] in node.volumes
        writable = await c.writable()
        assert sorted(v["volume_id"] for v in writable["volumes"]) == [1, 2]
        assert writable["alerts"] == []
        # Loads spread: 6 replicas over 4 nodes, no node holds both twice over.
        counts: dict[str, int] = {}
        for lv in created:
            for r in lv["replicas"]:
                counts[r["node_id"]] = counts.get(r["node_id"], 0) + 1
        assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 4


async def test_node_timeout_makes_volumes_readonly_and_return_rejoins(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    # Lookups answer from a snapshot at most lookup_snapshot_s old (on the same clock).
    config = fast_config(backend, lookup_snapshot_s=0.1)
    async with (
        running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        victim = cluster.node(lv["replicas"][0]["node_id"])
        await victim.pause_heartbeats()
        await cluster.advance(config.node_timeout_s * 0.9)
        assert (await c.volume(1))["writable"]  # silent, but not for node_timeout_s yet
        await cluster.advance(config.node_timeout_s * 0.2)
        down = await c.volume(1)
        assert not down["writable"] and down["reason"] == "node_down"
        nodes = {n["node_id"]: n for n in await c.nodes()}
        assert not nodes[victim.node_id]["alive"]
        assert (await c.writable())["alerts"] == ["no_writable_volume"]
        assert down["replicas"][-1]["node_id"] == victim.node_id  # alive ones first
        await health_pass(cluster.directory)
        assert await _stored_writable(cluster, 1, expected=False)
        await victim.beat_once()
        victim.resume_heartbeats()
        await cluster.advance(config.lookup_snapshot_s * 1.5)
        assert (await c.volume(1))["writable"]
        await health_pass(cluster.directory)
        assert await _stored_writable(cluster, 1, expected=True)


async def _stored_writable(cluster: Cluster, vid: int, *, expected: bool) -> bool:
    state = await cluster.directory.state()
    return state.volumes[vid].writable is expected


async def test_blob_writer_writes_every_replica(backend: dict[str, Any], tmp_path: Path) -> None:
    async with running_cluster(fast_config(backend), tmp_path, loops=False) as cluster:
        async with cluster.client() as c:
            await c.create_volumes(1)
            lv = await c.volume(1)
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            ref = await writer.put(42, 7, b"photo bytes" * 100)
            assert (ref.volume_id, ref.key, ref.alt_key, ref.size) == (1, 42, 7, 1100)
            for r in lv["replicas"]:
                async with cluster.node(r["node_id"]).client() as store:
                    needle = await store.get(1, 42, 7, ref.cookie)
                    assert needle.data == b"photo bytes" * 100
                    assert needle.etag == ref.etag
            answer = await writer.delete(1, 42, 7)
            assert answer == {"replicas_done": 3, "replicas_pending": 0}
            for r in lv["replicas"]:
                async with cluster.node(r["node_id"]).client() as store:
                    with pytest.raises(StoreClientError) as e:
                        await store.get(1, 42, 7, ref.cookie)
                    assert e.value.status == 404


async def test_no_writable_volume(backend: dict[str, Any], tmp_path: Path) -> None:
    async with (
        running_cluster(fast_config(backend), tmp_path, stores=0, loops=False) as cluster,
        BlobWriter(cluster.url, credentials=creds(SECRET)) as writer,
    ):
        with pytest.raises(NoWritableVolume):
            await writer.put(1, 0, b"x")


async def test_replica_failure_turns_readonly_and_write_goes_elsewhere(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    config = fast_config(backend, readonly_cooldown_s=30.0)
    async with running_cluster(config, tmp_path, loops=False) as cluster:
        async with cluster.client() as c:
            created = await c.create_volumes(2)
        sets = [{r["node_id"] for r in lv["replicas"]} for lv in created]
        only_in_first = sorted(sets[0] - sets[1])
        assert only_in_first, sets
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            await writer.put(1, 0, b"warm the writable cache", volume_id=1)
            await cluster.node(only_in_first[0]).stop()
            ref = await writer.put(5, 0, b"second", volume_id=1)
            assert ref.volume_id == 2
            for nid in sets[1]:
                async with cluster.node(nid).client() as store:
                    assert (await store.get(2, 5, 0, ref.cookie)).data == b"second"
        lv1 = await _lv(cluster, 1)
        assert not lv1["writable"]
        assert lv1["reason"].startswith(f"write_failure on {only_in_first[0]}")
        async with cluster.client() as c:
            status = await c.status()
            # The partial write on volume 1 is being deleted from all three replicas; the
            # stopped node's share stays pending.
            assert status["pending_deletes"] >= 1


async def test_delete_reaches_a_replica_that_was_down(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    """The delete loop retries a replica that fails with growing backoff; the node's
    first heartbeat after its downtime makes the delete due at once."""
    config = fast_config(backend, delete_retry_s_max=60.0)
    async with running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster:
        async with cluster.client() as c:
            (lv,) = await c.create_volumes(1)
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            ref = await writer.put(77, 0, b"to be deleted")
            victim = cluster.node(lv["replicas"][1]["node_id"])
            await victim.stop()
            answer = await writer.delete(ref.volume_id, 77)
            assert answer == {"replicas_done": 2, "replicas_pending": 1}
        # The node is still seen alive (silent for less than node_timeout_s): each pass
        # that finds the delete due tries it and backs it off further (0.4 s, 0.8 s).
        await cluster.advance(0.3)
        await delete_pass(cluster.directory)
        assert await _pending_attempts(cluster) == [2]
        await cluster.advance(0.45)
        await delete_pass(cluster.directory)
        assert await _pending_attempts(cluster) == [3]
        await cluster.advance(0.3)  # silent for node_timeout_s: down; next try 0.5 s away
        await delete_pass(cluster.directory)
        assert await _pending_attempts(cluster) == [3]
        await victim.start()  # back on a new port, heartbeating again
        await delete_pass(cluster.directory)
        assert await _pending_attempts(cluster) == []
        async with victim.client() as store:
            with pytest.raises(StoreClientError) as e:
                await store.get(ref.volume_id, 77, 0, ref.cookie)
            assert e.value.status == 404
        async with cluster.client() as c:
            assert (await c.status())["pending_deletes"] == 0


async def test_a_delete_does_not_wait_for_a_replica_seen_down(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    """A replica on a node the directory sees down is recorded, not tried: an unreachable
    host (a cut link drops packets) would hold the answer for node_request_timeout_s. Its
    heartbeat after the downtime gets it the delete."""
    config = fast_config(backend)
    async with running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster:
        async with cluster.client() as c:
            (lv,) = await c.create_volumes(1)
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            ref = await writer.put(78, 0, b"to be deleted")
            victim = cluster.node(lv["replicas"][2]["node_id"])
            await victim.pause_heartbeats()
            await cluster.advance(config.node_timeout_s + 0.1)  # silent: down
            answer = await writer.delete(ref.volume_id, 78)
        assert answer == {"replicas_done": 2, "replicas_pending": 1}
        assert await _pending_attempts(cluster) == [0]  # recorded, never sent
        async with victim.client() as store:  # it still has the needle
            assert (await store.get(ref.volume_id, 78, 0, ref.cookie)).data == b"to be deleted"
        await delete_pass(cluster.directory)  # still down: skipped
        assert await _pending_attempts(cluster) == [0]
        await victim.beat_once()  # back
        await delete_pass(cluster.directory)
        assert await _pending_attempts(cluster) == []
        async with victim.client() as store:
            with pytest.raises(StoreClientError) as e:
                await store.get(ref.volume_id, 78, 0, ref.cookie)
            assert e.value.status == 404


async def _pending_attempts(cluster: Cluster) -> list[int]:
    """The attempts of each pending delete."""
    pd = schema.pending_deletes
    async with cluster.directory.db.snapshot() as conn:
        return [int(a) for a in await conn.scalars(sa.select(pd.c.attempts).order_by(pd.c.id))]


async def test_growth_keeps_the_minimum_of_writable_volumes(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    config = fast_config(backend, writable_volumes_min=2)
    async with running_cluster(config, tmp_path) as cluster, cluster.client() as c:

        async def writable_count(n: int) -> bool:
            return len((await c.writable())["volumes"]) >= n

        await eventually(lambda: writable_count(2), what="growth to create 2 volumes")
        await c.set_readonly(1, "maintenance")  # an operator order
        await eventually(lambda: writable_count(2), what="growth to replace volume 1")
        writable = {v["volume_id"] for v in (await c.writable())["volumes"]}
        assert 1 not in writable and len(writable) >= 2
        assert (await c.volume(1))["reason"] == "operator: maintenance"
        assert (await c.set_writable(1))["writable"]


async def test_repairs_are_recorded_once_and_listed(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    async with (
        running_cluster(fast_config(backend), tmp_path, loops=False) as cluster,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        nid = lv["replicas"][0]["node_id"]
        first = await c.report_repair(1, 2**64 - 1, 3, nid, "scrub")
        again = await c.report_repair(1, 2**64 - 1, 3, nid, "scrub")
        assert first["id"] == again["id"] and again["duplicate"]
        (listed,) = await c.repairs()
        assert listed["key"] == str(2**64 - 1) and listed["state"] == RepairState.PENDING
        with pytest.raises(DirectoryError) as e:
            await c.report_repair(1, 1, 0, "store-unknown", "scrub")
        assert e.value.status == 404
        # Keys travel as canonical decimal strings (they exceed 2^53); anything else in a
        # number field is a bad request, never an error of the directory.
        write = auth(SECRET, Purpose.WRITE)
        async with aiohttp.ClientSession(headers=write) as s:
            for key in ("²", "007", "-1", str(2**64), 1.5, True):
                body = {"volume_id": 1, "key": key, "alt_key": 0, "node_id": nid}
                async with s.post(cluster.url + "/repairs", json=body) as r:
                    assert r.status == 400, key
                    assert (await r.json())["error"]["code"] == "bad_request"


async def test_replication_plan_and_replica_moves(backend: dict[str, Any], tmp_path: Path) -> None:
    config = fast_config(backend)
    async with (
        running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        holders = {r["node_id"] for r in lv["replicas"]}
        (spare,) = {"store-1", "store-2", "store-3", "store-4"} - holders
        assert await c.plan_replication() == []
        victim = cluster.node(sorted(holders)[0])
        await victim.pause_heartbeats()
        await cluster.advance(config.node_timeout_s * 0.5)
        assert await c.plan_replication() == []  # silent, not yet down
        await cluster.advance(config.node_timeout_s * 0.6)
        (move,) = await c.plan_replication()
        assert move["target"]["node_id"] == spare
        assert move["replaces"] == victim.node_id
        assert move["source"]["node_id"] in holders - {victim.node_id}
        after = await c.add_replica(1, spare, replaces=victim.node_id)
        assert {r["node_id"]: r["state"] for r in after["replicas"]}[spare] == ReplicaState.COPYING
        await c.add_replica(1, spare, replaces=victim.node_id)  # idempotent
        (resumed,) = await c.plan_replication()
        assert resumed["target"]["node_id"] == spare
        done = await c.replica_ready(1, spare)
        assert {r["node_id"] for r in done["replicas"]} == (holders - {victim.node_id}) | {spare}
        for r in done["replicas"][:-1]:
            await c.remove_replica(1, r["node_id"])
        with pytest.raises(DirectoryError) as e:
            await c.remove_replica(1, done["replicas"][-1]["node_id"])
        assert (e.value.status, e.value.code) == (409, "conflict")


async def test_balance_plan_moves_from_loaded_to_empty_nodes(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    async with (
        running_cluster(fast_config(backend), tmp_path, stores=3, loops=False) as cluster,
        cluster.client() as c,
    ):
        await c.create_volumes(3)
        assert await c.plan_balance() == []
        extra = cluster.nodes[0].__class__(
            "store-4", "dc1/rack2/host4", tmp_path / "store-4", cluster.url
        )
        cluster.nodes.append(extra)
        await extra.start()
        moves = await c.plan_balance()
        assert moves and all(m["target"]["node_id"] == "store-4" for m in moves)
        assert all(m["replaces"] == m["source"]["node_id"] for m in moves)


async def test_repair_rewrites_a_bad_copy_from_a_healthy_replica(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    async with running_cluster(fast_config(backend), tmp_path) as cluster:
        async with cluster.client() as c:
            (lv,) = await c.create_volumes(1)
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            ref = await writer.put(9, 1, b"precious" * 1000)
        bad = cluster.node(lv["replicas"][2]["node_id"])
        async with bad.client() as store:
            await store.delete(1, 9, 1)  # the copy on this node is lost
        async with cluster.client() as c:
            await c.report_repair(1, 9, 1, bad.node_id, "scrub")

            async def repaired() -> bool:
                return [r["state"] for r in await c.repairs()] == [RepairState.DONE]

            await eventually(repaired, what="the repair to finish")
        async with bad.client() as store:
            assert (await store.get(1, 9, 1, ref.cookie)).data == b"precious" * 1000


async def test_two_directories_share_one_database(backend: dict[str, Any], tmp_path: Path) -> None:
    """Concurrent volume creation through both never reuses an id, and each loop runs in one
    process at a time; when that process stops, the other takes its loops over."""
    # Nodes count as down only after 10 s, and a store has 10 s to create a volume: on a
    # loaded machine a heartbeat can be a second late and eight creations at once took
    # longer than 2 s, and this test is about ids and leases, not node health.
    config = fast_config(backend, lease_s=1.0, node_timeout_s=10.0, node_request_timeout_s=10.0)
    async with running_cluster(config, tmp_path) as cluster:
        async with running_directory(config, credentials=creds(SECRET, "directory")) as (
            second,
            port,
        ):
            other = DirectoryClient(f"http://127.0.0.1:{port}", credentials=creds(SECRET))
            async with cluster.client() as first, other:
                made = await asyncio.gather(
                    *(first.create_volumes(1) for _ in range(4)),
                    *(other.create_volumes(1) for _ in range(4)),
                )
                ids = sorted(lv["volume_id"] for batch in made for lv in batch)
                assert ids == list(range(1, 9))
                assert len(await other.volumes()) == 8
            await eventually(
                lambda: _passes_each(LOOPS, [cluster.directory, second], at_least=5),
                what="five passes of every loop between the two",
            )
            for loop in LOOPS:
                mine = [(s, e) for n, s, e in cluster.directory.pass_log if n == loop]
                theirs = [(s, e) for n, s, e in second.pass_log if n == loop]
                assert mine or theirs, loop
                for s1, e1 in mine:  # no pass of one overlaps a pass of the other
                    assert all(e1 <= s2 or e2 <= s1 for s2, e2 in theirs), loop
        # `second` stopped and released its leases: the first takes every loop.
        before = cluster.directory.passes.copy()

        async def took_over() -> bool:
            return all(cluster.directory.passes[loop] > before[loop] for loop in LOOPS)

        await eventually(took_over, what="the first directory to run every loop")


async def _passes_each(loops: tuple[str, ...], directories: list[Directory], at_least: int) -> bool:
    """Whether the directories together ran at least `at_least` passes of every loop."""
    return all(sum(d.passes[loop] for d in directories) >= at_least for loop in loops)


async def test_a_repair_never_brings_a_deleted_needle_back(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    """A delete reached two replicas; the third was down and is back, its delete still
    pending. A report that the first replica "lost" the needle (a reader found it absent
    there but present on the third) must not copy it back."""
    async with running_cluster(fast_config(backend), tmp_path, loops=False) as cluster:
        async with cluster.client() as c:
            (lv,) = await c.create_volumes(1)
        first, late = (cluster.node(r["node_id"]) for r in lv["replicas"][:2])
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            ref = await writer.put(88, 0, b"deleted for good")
            await late.stop()
            answer = await writer.delete(ref.volume_id, 88)
            assert answer == {"replicas_done": 2, "replicas_pending": 1}
        await late.start()  # back, still holding the needle: no delete loop runs here
        async with late.client() as store:
            assert (await store.get(1, 88, 0, ref.cookie)).data == b"deleted for good"
        async with cluster.client() as c:
            await c.report_repair(1, 88, 0, first.node_id, "read")
        await repair_pass(cluster.directory)
        async with first.client() as store:
            with pytest.raises(StoreClientError) as e:
                await store.get(1, 88, 0, ref.cookie)
            assert e.value.status == 404
        async with cluster.client() as c:
            assert [r["state"] for r in await c.repairs()] == [RepairState.DONE]


async def test_a_volume_still_being_created_moves_off_a_dead_node(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    """Growth allocated a volume on a node that died before the physical volume was made:
    the next pass moves that replica elsewhere (keeping placement) and finishes the volume,
    so a dead node never blocks growth."""
    config = fast_config(backend)
    async with running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster:
        (vid,) = await allocate(cluster.directory, 1, partial=False)
        state = await cluster.directory.state()
        chosen = [r.node_id for r in state.volumes[vid].replicas]
        assert state.volumes[vid].state == LogicalVolumeState.CREATING and len(chosen) == 3
        dead = cluster.node(chosen[1])
        await dead.stop()
        await cluster.advance(config.node_timeout_s)  # the directory now sees it down
        await growth_pass(cluster.directory)
        state = await cluster.directory.state()
        lv = state.volumes[vid]
        now_on = {r.node_id for r in lv.replicas}
        assert lv.state == LogicalVolumeState.ACTIVE, lv
        assert dead.node_id not in now_on and len(now_on) == 3
        assert now_on == {n.node_id for n in cluster.nodes} - {dead.node_id}
        for node in cluster.nodes:
            if node.node_id in now_on:
                assert node.node is not None and vid in node.node.volumes


async def test_a_replaced_replica_is_released_when_its_node_returns(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    """fix-replication's moves replace a dead replica; the node comes back holding the old
    copy, which missed the deletes made meanwhile: the releases loop deletes it, and no
    move may turn it into a replica before that."""
    config = fast_config(backend)
    async with (
        running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        vid = lv["volume_id"]
        holders = sorted(r["node_id"] for r in lv["replicas"])
        (spare,) = {"store-1", "store-2", "store-3", "store-4"} - set(holders)
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            await writer.put(41, 0, b"written before the node went away")
        victim = cluster.node(holders[0])
        await victim.stop()
        await cluster.advance(config.node_timeout_s * 1.1)
        (move,) = await c.plan_replication()
        assert (move["target"]["node_id"], move["replaces"]) == (spare, victim.node_id)
        await c.add_replica(vid, spare, replaces=victim.node_id)

        await victim.start()  # back, still holding the volume
        files = sorted(victim.data_dir.rglob(f"v{vid}.*"))
        assert files
        await release_pass(cluster.directory)  # still one of its replicas: kept
        assert sorted(victim.data_dir.rglob(f"v{vid}.*")) == files
        await c.replica_ready(vid, spare)  # the victim's replica row goes
        # The old copy may not become a replica again, nor be planned as a target.
        with pytest.raises(DirectoryError) as e:
            await c.add_replica(vid, victim.node_id)
        assert (e.value.status, e.value.code) == (409, "stale_copy_held")
        # Two ready replicas elsewhere (one holder away) are not enough to release it, and
        # no move replaces the holder with the victim (the only other alive node).
        away = cluster.node(holders[1])
        await away.pause_heartbeats()
        await cluster.advance(config.node_timeout_s * 1.1)
        assert await c.plan_replication() == []
        await release_pass(cluster.directory)
        assert sorted(victim.data_dir.rglob(f"v{vid}.*")) == files
        assert cluster.directory.counters["replaced_releases"] == 0
        away.resume_heartbeats()
        await cluster.advance(0.01)

        await release_pass(cluster.directory)  # three ready replicas without the victim
        assert sorted(victim.data_dir.rglob(f"v{vid}.*")) == []
        assert cluster.directory.counters["replaced_releases"] == 1
        await victim.beat_once()
        assert vid not in (await cluster.directory.state()).nodes[victim.node_id].volumes
        await release_pass(cluster.directory)  # nothing left to release
        assert cluster.directory.counters["replaced_releases"] == 1
        # The node holds nothing of the volume now: it may take a replica again.
        after = await c.add_replica(vid, victim.node_id)
        assert {r["node_id"]: r["state"] for r in after["replicas"]}[victim.node_id] == "copying"


async def test_a_copy_the_directory_did_not_place_is_kept_and_its_id_never_reused(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    """As after a restore from an older backup: a node holds volumes the directory does not
    know, or under an id it knows for other replicas. Nothing deletes them, no move makes
    them replicas, and new volumes get ids above every reported one."""
    config = fast_config(backend)
    async with (
        running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster,
        cluster.client() as c,
    ):
        (lv,) = await c.create_volumes(1)
        vid = lv["volume_id"]
        (spare,) = {"store-1", "store-2", "store-3", "store-4"} - {
            r["node_id"] for r in lv["replicas"]
        }
        node = cluster.node(spare)
        async with node.client() as store:
            await store.create_volume(vid)  # the same id, not placed there by the directory
            await store.create_volume(vid + 7)  # an id the directory does not know
        await node.beat_once()
        await release_pass(cluster.directory)
        assert len(list(node.data_dir.rglob(f"v{vid}.*"))) > 0
        assert len(list(node.data_dir.rglob(f"v{vid + 7}.*"))) > 0
        with pytest.raises(DirectoryError) as e:
            await c.add_replica(vid, spare)
        assert (e.value.status, e.value.code) == (409, "stale_copy_held")
        (new,) = await c.create_volumes(1)
        assert new["volume_id"] == vid + 8
