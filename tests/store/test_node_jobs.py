"""Node jobs (store/node_jobs.py): every kind is cancelled the one way, LocalJob.cancel(),
and moves its bytes through its job's throttle."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.jobs.local import LocalJob, LocalJobState
from store.node import StoreNode
from store.server import running_node
from store.superblock import SUPERBLOCK_BYTES
from store.volume_pull import pull_data_name, pull_sidecar_name
from tests.conftest import creds
from tests.store.cluster import SECRET, eventually, node_config

COOKIE = 7


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[StoreNode]:
    n = StoreNode(node_config(tmp_path / "n"), credentials=creds(SECRET, "store"))
    await n.start()
    try:
        vol = await n.create_volume(1)
        for key in range(200):
            await vol.put_async(key, 0, COOKIE, bytes([key]) * 3000)
        for key in range(0, 200, 2):
            await n.delete(1, key, 0)
        yield n
    finally:
        await n.close()


async def _cancelled(job: LocalJob) -> None:
    job.cancel()
    await job.finished.wait()
    assert (job.state, job.error) == (LocalJobState.FAILED, "cancelled")


async def _check_needles(n: StoreNode) -> None:
    for key in range(1, 200, 2):
        got, _ = await n.read_internal(1, key, 0)
        assert bytes(got.data) == bytes([key]) * 3000


@pytest.mark.parametrize("kind", ["compact", "verify", "scrub"])
async def test_each_job_kind_is_cancelled_through_its_job(node: StoreNode, kind: str) -> None:
    # 2 KB/s: the job would take minutes; the cancel ends it at its throttle.
    job = node.start_job(1, kind, bytes_per_s_max=2_000)
    assert node.jobs[(1, kind)] is job
    await _cancelled(job)
    assert "v1.cpd" not in os.listdir(node.storage.root)  # a compaction rolled back
    await _check_needles(node)
    # The cancelled job leaves room for the next one of its kind.
    again = node.start_job(1, kind)
    await again.finished.wait()
    assert again.state is LocalJobState.DONE, again.error


@pytest.mark.parametrize("kind", ["compact", "verify", "scrub"])
async def test_each_job_kind_moves_its_bytes_through_its_throttle(
    node: StoreNode, kind: str
) -> None:
    job = node.start_job(1, kind)
    await job.finished.wait()
    assert job.state is LocalJobState.DONE, job.error
    assert job.result is not None
    if kind == "compact":
        assert job.bytes == job.result["bytes_copied"] + job.result["tail_bytes_replayed"] > 0
    else:
        assert job.bytes == job.result["bytes_checked"] - SUPERBLOCK_BYTES > 0
    assert job.progress == 1.0


async def test_closing_the_node_cancels_its_jobs_and_waits_for_them(tmp_path: Path) -> None:
    n = StoreNode(node_config(tmp_path / "n"), credentials=creds(SECRET, "store"))
    await n.start()
    vol = await n.create_volume(1)
    for key in range(100):
        await vol.put_async(key, 0, COOKIE, b"c" * 3000)
    jobs = [n.start_job(1, kind, bytes_per_s_max=2_000) for kind in ("compact", "scrub")]
    await n.close()
    for job in jobs:
        assert (job.state, job.error) == (LocalJobState.FAILED, "cancelled")
    assert "v1.cpd" not in os.listdir(tmp_path / "n" / "volumes")


async def test_a_pull_is_cancelled_through_its_job_and_keeps_its_temp_files(
    tmp_path: Path,
) -> None:
    async with (
        running_node(
            node_config(tmp_path / "a"), credentials=creds(SECRET, "store"), create_volumes=[1]
        ) as (a, sa),
        running_node(node_config(tmp_path / "b"), credentials=creds(SECRET, "store")) as (b, _),
    ):
        for key in range(100):
            await a.put(1, key, 0, COOKIE, bytes([key]) * 4000)
        # 64 KB/s: the first chunk is copied, the next waits at the throttle.
        job = b.start_pull(1, f"http://127.0.0.1:{sa.port}", bytes_per_s_max=65_536)
        await eventually(lambda: job.bytes > 0)
        await _cancelled(job)
        names = os.listdir(b.storage.root)
        assert pull_data_name(1) in names and pull_sidecar_name(1) in names
        assert 1 not in b.volumes
        assert 0 < job.bytes < a.volume(1).end
