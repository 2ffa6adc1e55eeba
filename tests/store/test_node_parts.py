"""The pieces StoreNode is made of, each on its own: the registry, the read path, and the
heartbeat against the narrow protocol it needs (no StoreNode anywhere here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from store.config import StoreConfig
from store.errors import (
    NeedleNotFound,
    NodeBusy,
    OffsetPastEnd,
    QueueFull,
    StoreBadRequest,
    VolumeExists,
    VolumeNotOnNode,
)
from store.heartbeat import Heartbeat
from store.read_path import ReadPath
from store.registry import VOLUME_ID_MAX, VolumeRegistry
from store.storage import OsStorage
from store.volume import Volume, VolumeStatistics
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume
from store.volume_pull import DAT_READ_BYTES_MAX
from tests.conftest import creds
from tests.store.cluster import SECRET

COOKIE = 11


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as p:
        yield p


@pytest.fixture
async def registry(tmp_path: Path, pool: ThreadPoolExecutor) -> AsyncIterator[VolumeRegistry]:
    config = StoreConfig(data_dir=tmp_path, volumes_max=2)
    r = VolumeRegistry(config, OsStorage(config.volumes_dir), pool)
    await r.open_all()
    try:
        yield r
    finally:
        await r.close_all()


async def test_the_registry_creates_refuses_and_deletes(registry: VolumeRegistry) -> None:
    with pytest.raises(StoreBadRequest):
        await registry.create_volume(VOLUME_ID_MAX + 1)
    await registry.create_volume(1)
    assert registry.changed.is_set()
    with pytest.raises(VolumeExists):
        await registry.create_volume(1)
    with pytest.raises(NodeBusy):
        await registry.create_volume(2, check=_busy)
    await registry.create_volume(2)
    with pytest.raises(NodeBusy):  # volumes_max=2
        await registry.create_volume(3)
    seen: list[bool] = []

    async def stop_work(vid: int) -> None:
        # By now the volume has left the registry: no new work can find it.
        seen.append(vid not in registry.volumes)

    await registry.delete_volume(1, stop_work=stop_work)
    assert seen == [True] and sorted(registry.volumes) == [2]
    with pytest.raises(VolumeNotOnNode):
        await registry.delete_volume(1, stop_work=stop_work)
    assert not any(n.startswith("v1.") for n in registry.storage.list())


def _busy() -> None:
    raise NodeBusy("a pull of it runs")


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    vol = create_volume(OsStorage(tmp_path / "v"), 1, VolumeLimits(size_bytes_max=16 * 1024**2))
    for key in range(10):
        vol.put(key, 0, COOKIE, bytes([key]) * 1000).result()
    try:
        yield vol
    finally:
        vol.close()


def _read_path(vol: Volume, pool: ThreadPoolExecutor, *, queue_max: int) -> ReadPath:
    def lookup(vid: int) -> Volume:
        if vid != vol.id:
            raise VolumeNotOnNode(f"volume {vid} is not on this node")
        return vol

    return ReadPath(lookup, read_queue_depth=2, read_queue_max=queue_max, transfer_pool=pool)


async def test_the_read_path_counts_every_outcome(volume: Volume, pool: ThreadPoolExecutor) -> None:
    reads = _read_path(volume, pool, queue_max=8)
    try:
        got = await reads.read(1, 3, 0, COOKIE)
        assert bytes(got.data) == b"\x03" * 1000
        got_internal, cookie = await reads.read_internal(1, 4, 0)
        assert cookie == COOKIE and bytes(got_internal.data) == b"\x04" * 1000
        with pytest.raises(NeedleNotFound):
            await reads.read(1, 3, 0, COOKIE + 1)  # a wrong cookie is a missing needle
        with pytest.raises(VolumeNotOnNode):
            await reads.read(2, 3, 0, COOKIE)
        c = reads.counters
        assert (c.reads, c.reads_from_disk, c.reads_internal, c.reads_not_found) == (1, 1, 1, 1)
        assert c.read_bytes == 1000 and c.reads_waiting == 0
    finally:
        reads.close()


async def test_the_read_path_refuses_reads_beyond_its_queue(
    volume: Volume, pool: ThreadPoolExecutor
) -> None:
    reads = _read_path(volume, pool, queue_max=1)
    try:
        reads.counters.reads_waiting = 1  # one read already waits for the device
        with pytest.raises(QueueFull):
            await reads.read(1, 3, 0, COOKIE)
        assert reads.counters.reads_refused == 1
    finally:
        reads.close()


async def test_raw_file_reads_stop_at_the_durable_end(
    volume: Volume, pool: ThreadPoolExecutor
) -> None:
    reads = _read_path(volume, pool, queue_max=8)
    try:
        end = volume.end
        chunk = await reads.read_dat(1, 0, DAT_READ_BYTES_MAX)
        assert len(chunk.data) == chunk.volume_end == end
        assert (await reads.read_dat(1, end, 100)).data == b""
        with pytest.raises(OffsetPastEnd):
            await reads.read_dat(1, end + 1, 100)
        with pytest.raises(StoreBadRequest):
            await reads.read_dat(1, 0, DAT_READ_BYTES_MAX + 1)
        assert reads.counters.dat_read_bytes == end
    finally:
        reads.close()


class StandInNode:
    """Only what the heartbeat's BeatingNode protocol asks for."""

    def __init__(self, volume: Volume) -> None:
        self.node_id = "stand-in:1"
        self.failure_domain = "dc1/r1/h1"
        self.changed = asyncio.Event()
        self._volume = volume

    def free_bytes(self) -> int:
        return 12345

    def volume_statistics(self) -> list[VolumeStatistics]:
        return [self._volume.statistics()]


async def test_the_heartbeat_needs_only_its_protocol(volume: Volume) -> None:
    beat = Heartbeat(
        StandInNode(volume),
        directory_url="http://127.0.0.1:9/",
        url="http://127.0.0.1:8080",
        credentials=creds(SECRET, "store"),
        interval_s=1.0,
    )
    doc = beat.payload()
    assert (doc["node_id"], doc["failure_domain"], doc["free_bytes"]) == (
        "stand-in:1",
        "dc1/r1/h1",
        12345,
    )
    assert [v["volume_id"] for v in doc["volumes"]] == [1]
