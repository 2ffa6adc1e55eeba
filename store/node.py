"""A store node: the volumes of one data directory, served to the event loop.

`StoreNode` is a thin composition, what the HTTP API (store/http_api.py) and the server
(store/server.py) use:

- `registry` (store/registry.py): the volumes, their creation, deletion and modes;
- `read_path` (store/read_path.py): cached, device and internal reads, raw file reads;
- `jobs` (store/node_jobs.py): compaction, verify, scrub and pull, as LocalJobs;
- `scrubber` (store/scrubber.py) and the heartbeat (store/heartbeat.py), which see the node
  through narrow protocols;
- statistics (store/node_statistics.py).

The node owns the executors: blocking reads (page-cache misses) run on `read_queue_depth`
threads, the node's disk queue depth; volume administration (open, create, compaction,
verify, scrub, close, delete) on a small admin pool; volume file transfers (exports to a
pulling node, the writes of a pull) on a transfer pool of their own, so that a long
compaction never stalls a replica move. Nothing here blocks the loop: reads first try the
page cache without waiting, writes wait on the volume writer's future. close() cancels the
jobs and waits for them before the volumes close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Final, TypeVar

from common.credentials import Credentials
from common.jobs.local import LocalJob
from store import native
from store.client import DatChunk
from store.config import StoreConfig
from store.node_jobs import NodeJobs
from store.node_statistics import NodeStatistics
from store.read_path import ReadPath
from store.registry import VolumeRegistry
from store.scrubber import Scrubber
from store.storage import OsStorage, Storage
from store.volume import Volume, VolumeStatistics
from store.volume_pull import pull_leftovers
from store.volume_read import NeedleRead
from store.volume_state import Mode, VolumeState
from store.volume_write import DeleteResult, PutResult

if TYPE_CHECKING:
    from store.heartbeat import Heartbeat

log = logging.getLogger("pinhole.store")

T = TypeVar("T")

ADMIN_THREADS: Final = 4
TRANSFER_THREADS: Final = 2


class StoreNode:
    def __init__(
        self,
        config: StoreConfig,
        *,
        storage: Storage | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.config = config
        self.storage = storage if storage is not None else OsStorage(config.volumes_dir)
        # This node's credentials towards other nodes (pull sources: node) and the directory
        # (heartbeats, repair reports: node).
        self.credentials = credentials
        # How the cluster names this node; running_node fills in the bound port.
        self.node_id = config.name
        self.started_unix_s = time.time()
        self.heartbeat: Heartbeat | None = None
        self._admin_pool = ThreadPoolExecutor(ADMIN_THREADS, thread_name_prefix="store-admin")
        self._transfer_pool = ThreadPoolExecutor(
            TRANSFER_THREADS, thread_name_prefix="store-transfer"
        )
        self.registry = VolumeRegistry(config, self.storage, self._admin_pool)
        self.read_path = ReadPath(
            self.registry.volume,
            read_queue_depth=config.read_queue_depth,
            read_queue_max=config.read_queue_max,
            transfer_pool=self._transfer_pool,
            hot_read=native.load(enabled=config.native),
        )
        self.scrubber = Scrubber(self)
        self.node_jobs = NodeJobs(
            self.registry,
            self.scrubber,
            config=config,
            credentials=credentials,
            admin_pool=self._admin_pool,
            transfer_pool=self._transfer_pool,
        )
        self._background: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.registry.open_all()
        # Interrupted pulls are not volumes: they wait for a pull to resume them, or for
        # DELETE /volumes/{id} to remove them.
        for vid, nbytes in (await self.run_admin(lambda: pull_leftovers(self.storage))).items():
            log.info("v%d: an interrupted pull left %d bytes (resumable)", vid, nbytes)
        await self.scrubber.open()
        if self.config.compaction_check_interval_s > 0:
            self._background.append(asyncio.create_task(self.node_jobs.compact_in_background()))
        if self.config.scrub_interval_s > 0:
            self._background.append(
                asyncio.create_task(self.scrubber.run_forever(self.config.scrub_interval_s))
            )
        log.info("store node %s: %d volumes open", self.config.name, len(self.volumes))

    async def close(self) -> None:
        self.scrubber.stop()  # a background scrub pass stops at its next needle
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.node_jobs.close()
        await self.scrubber.close()
        await self.registry.close_all()
        self.read_path.close()
        self._admin_pool.shutdown(wait=True)
        self._transfer_pool.shutdown(wait=True)

    async def run_admin(self, fn: Callable[[], T]) -> T:
        """Runs a blocking call on the admin pool."""
        return await self.registry.run_admin(fn)

    # -- what the protocols of the scrubber and the heartbeat read ------------------------------

    @property
    def volumes(self) -> dict[int, Volume]:
        return self.registry.volumes

    @property
    def volume_ids(self) -> Collection[int]:
        return self.registry.volumes.keys()

    @property
    def changed(self) -> asyncio.Event:
        """Set whenever the set of volumes or a volume's state changes."""
        return self.registry.changed

    @property
    def failure_domain(self) -> str:
        return self.config.failure_domain

    def free_bytes(self) -> int:
        return self.storage.free_bytes()

    def volume_statistics(self) -> list[VolumeStatistics]:
        return [v.statistics() for v in self.registry.volumes.values()]

    # -- data path -----------------------------------------------------------------------------

    def volume(self, vid: int) -> Volume:
        return self.registry.volume(vid)

    def read_cached(self, vid: int, key: int, alt_key: int, cookie: int) -> NeedleRead | None:
        return self.read_path.read_cached(vid, key, alt_key, cookie)

    async def read(self, vid: int, key: int, alt_key: int, cookie: int) -> NeedleRead:
        return await self.read_path.read(vid, key, alt_key, cookie)

    async def read_internal(self, vid: int, key: int, alt_key: int) -> tuple[NeedleRead, int]:
        return await self.read_path.read_internal(vid, key, alt_key)

    async def read_dat(self, vid: int, offset: int, length: int) -> DatChunk:
        return await self.read_path.read_dat(vid, offset, length)

    async def put(
        self,
        vid: int,
        key: int,
        alt_key: int,
        cookie: int,
        data: bytes | bytearray | memoryview,
        *,
        data_checksum: int | None = None,
        repair: bool = False,
    ) -> PutResult:
        """Writes a needle; a `repair` write is also taken by a volume that is read-only
        because it is full or by an operator's order (never after an I/O error, never
        sealed)."""
        return await self.volume(vid).put_async(
            key, alt_key, cookie, data, data_checksum=data_checksum, repair=repair
        )

    async def delete(self, vid: int, key: int, alt_key: int | None) -> DeleteResult:
        return await self.volume(vid).delete_async(key, alt_key)

    # -- administration ------------------------------------------------------------------------

    @property
    def jobs(self) -> dict[tuple[int, str], LocalJob]:
        return self.node_jobs.jobs

    async def create_volume(self, vid: int) -> Volume:
        return await self.registry.create_volume(
            vid, check=lambda: self.node_jobs.refuse_if_pulling(vid)
        )

    async def delete_volume(self, vid: int) -> None:
        """Closes volume `vid` and removes its files (and those of a pull of it, which is
        cancelled). Jobs running on it are cancelled first. VolumeNotOnNode when the node
        has neither the volume nor a pull of it."""
        await self.node_jobs.cancel(self.node_jobs.running(vid, "pull"))
        await self.registry.delete_volume(vid, stop_work=self.node_jobs.stop_volume_work)

    async def set_mode(self, vid: int, mode: Mode) -> VolumeState:
        return await self.registry.set_mode(vid, mode)

    def start_job(self, vid: int, kind: str, *, bytes_per_s_max: float | None = None) -> LocalJob:
        return self.node_jobs.start_job(vid, kind, bytes_per_s_max=bytes_per_s_max)

    def start_pull(
        self, vid: int, source: str, *, bytes_per_s_max: float | None = None
    ) -> LocalJob:
        return self.node_jobs.start_pull(vid, source, bytes_per_s_max=bytes_per_s_max)

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            node_id=self.node_id,
            failure_domain=self.failure_domain,
            started_unix_s=self.started_unix_s,
            volumes=self.volume_statistics(),
            **asdict(self.read_path.counters),
            free_bytes=self.free_bytes(),
            scrub=self.scrubber.statistics(),
            heartbeat=self.heartbeat.statistics() if self.heartbeat is not None else None,
        )
