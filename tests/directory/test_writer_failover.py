"""BlobWriter when a store node dies, against real in-process store nodes and a real
directory, on SQLite and on PostgreSQL: the next put lands on a volume without the dead node
before the directory notices, a put waits for the volume the directory grows, and with
every node gone NoWritableVolume says what failed after put_retry_s_max."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.jobs import ManualClock
from directory.errors import NoWritableVolume
from directory.growth import growth_pass
from directory.writer import BlobWriter
from tests.conftest import creds
from tests.directory.conftest import SECRET, Cluster, fast_config, running_cluster

pytestmark = pytest.mark.timeout(60)


async def _replica_nodes(cluster: Cluster, vid: int) -> set[str]:
    async with cluster.client() as c:
        return {r["node_id"] for r in (await c.volume(vid))["replicas"]}


async def _writable(cluster: Cluster) -> set[int]:
    async with cluster.client() as c:
        return {v["volume_id"] for v in (await c.writable())["volumes"]}


async def test_a_dead_node_s_volumes_are_skipped_before_the_directory_notices(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    # Heartbeats keep the directory's view of every node alive for a minute.
    config = fast_config(backend, node_timeout_s=60.0, readonly_cooldown_s=60.0)
    async with running_cluster(config, tmp_path, loops=False) as cluster:
        async with cluster.client() as c:
            created = await c.create_volumes(4)
        placed = {lv["volume_id"]: {r["node_id"] for r in lv["replicas"]} for lv in created}
        # Three replicas on four nodes: each node misses at least one volume.
        dead = "store-1"
        with_dead = sorted(vid for vid, nodes in placed.items() if dead in nodes)
        without = sorted(vid for vid, nodes in placed.items() if dead not in nodes)
        assert len(with_dead) >= 2 and without, placed
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            await writer.put(1, 0, b"warm the writable cache", volume_id=with_dead[0])
            await cluster.node(dead).stop()
            ref = await writer.put(2, 0, b"after the death", volume_id=with_dead[0])
            assert ref.volume_id in without
            for nid in placed[ref.volume_id]:
                async with cluster.node(nid).client() as store:
                    assert (await store.get(ref.volume_id, 2, 0, ref.cookie)).data == (
                        b"after the death"
                    )
        state = await cluster.directory.state()
        assert state.alive(dead)  # the directory has not noticed
        # One volume failed and was reported; the dead node's others were never tried.
        assert await _writable(cluster) == set(placed) - {with_dead[0]}


async def test_a_put_waits_for_the_volume_grown_after_a_node_dies(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    # The directory grows one writable volume, notices a silent node after node_timeout_s
    # (on its clock, moved by the test), and then grows another without it: the first put
    # after the death waits (in real time, the writer's) for that one.
    config = fast_config(backend, writable_volumes_min=1, node_timeout_s=1.0)
    async with running_cluster(config, tmp_path, loops=False, clock=ManualClock()) as cluster:
        await growth_pass(cluster.directory)
        (first,) = await _writable(cluster)
        victim = sorted(await _replica_nodes(cluster, first))[0]
        async with BlobWriter(cluster.url, credentials=creds(SECRET)) as writer:
            await writer.put(1, 0, b"before", volume_id=first)
            await cluster.node(victim).stop()
            put = asyncio.create_task(writer.put(2, 0, b"after"))
            await cluster.advance(config.node_timeout_s)
            await growth_pass(cluster.directory)
            ref = await put
            assert ref.volume_id != first
            assert victim not in await _replica_nodes(cluster, ref.volume_id)


async def test_every_node_gone_is_no_writable_volume_after_put_retry_s_max(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    config = fast_config(backend, node_timeout_s=60.0)
    async with running_cluster(config, tmp_path, loops=False) as cluster:
        async with cluster.client() as c:
            await c.create_volumes(4)
        async with BlobWriter(
            cluster.url, credentials=creds(SECRET), put_retry_s_max=1.0
        ) as writer:
            await writer.put(1, 0, b"warm the writable cache")
            for node in cluster.nodes:
                await node.stop()
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(NoWritableVolume) as info:
                await writer.put(2, 0, b"nowhere")
            waited = loop.time() - began
    message = str(info.value)
    assert message.startswith("no writable volume accepted the write within 1 s: 1 volume failed")
    assert message.count(" unreachable") >= 3
    assert "3 volumes skipped (on unreachable nodes store-" in message
    assert message.endswith("the directory lists none other")
    assert info.value.retry_after_s == 1.0
    assert 1.0 <= waited < 6.0
