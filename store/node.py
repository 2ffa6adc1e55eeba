"""A store node: the volumes of one data directory, served to the event loop.

The node owns the executors: blocking reads (page-cache misses) run on `read_queue_depth`
threads, which is the node's disk queue depth; volume administration (open, create,
compaction, verify, close) runs on a small admin pool. Nothing here blocks the loop: reads
first try the page cache without waiting (store/volume_read.read_cached), writes wait on the
volume writer's future.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from store import volume_read
from store.config import StoreConfig
from store.device_reader import DeviceReader
from store.errors import Busy, NotFound, QueueFull, StoreError, VolumeExists, VolumeNotFound
from store.storage import OsStorage, Storage
from store.volume import Volume, VolumeStatistics
from store.volume_checking import verify
from store.volume_compact import Compaction
from store.volume_loading import create_volume, open_volume, volume_ids
from store.volume_read import NeedleRead
from store.volume_state import Mode, Reason, VolumeState, read_only, sealed
from store.volume_write import DeleteResult, PutResult

log = logging.getLogger("pinhole.store")

ADMIN_THREADS: Final = 4
JOB_KINDS: Final = ("compact", "verify")
VOLUME_ID_MAX: Final = 2**32 - 1


@dataclass
class Job:
    """A long operation on one volume (compaction, verify), polled over HTTP."""

    kind: str
    volume_id: int
    started_unix_s: float = field(default_factory=time.time)
    state: str = "running"  # running | done | failed
    progress: float = 0.0  # 0..1
    result: dict[str, Any] | None = None
    error: str | None = None
    finished_unix_s: float | None = None
    cancel: Callable[[], None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "volume_id": self.volume_id,
            "state": self.state,
            "progress": round(self.progress, 4),
            "started_unix_s": self.started_unix_s,
            "finished_unix_s": self.finished_unix_s,
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    node_id: str
    failure_domain: str
    started_unix_s: float
    volumes: list[VolumeStatistics]
    reads: int
    read_bytes: int
    reads_from_cache: int
    reads_from_disk: int
    reads_not_found: int
    reads_corrupt: int
    read_errors: int
    reads_waiting: int
    reads_refused: int
    free_bytes: int


class StoreNode:
    def __init__(self, config: StoreConfig, *, storage: Storage | None = None) -> None:
        self.config = config
        self.storage = storage if storage is not None else OsStorage(config.volumes_dir)
        self.volumes: dict[int, Volume] = {}
        self.jobs: dict[tuple[int, str], Job] = {}
        self.started_unix_s = time.time()
        self._device = DeviceReader(config.read_queue_depth)
        self._admin_pool = ThreadPoolExecutor(ADMIN_THREADS, thread_name_prefix="store-admin")
        self._admin_lock = asyncio.Lock()
        self._compaction_task: asyncio.Task[None] | None = None
        # Strong references to helper tasks (the loop keeps only weak ones).
        self._tasks: set[asyncio.Task[None]] = set()
        self.reads = 0
        self.read_bytes = 0
        self.reads_from_cache = 0
        self.reads_from_disk = 0
        self.reads_not_found = 0
        self.reads_corrupt = 0
        self.read_errors = 0
        self.reads_waiting = 0
        self.reads_refused = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ids = volume_ids(self.storage)
        if len(ids) > self.config.volumes_max:
            raise StoreError(f"{len(ids)} volumes exceed volumes_max={self.config.volumes_max}")
        opened = await asyncio.gather(
            *(loop.run_in_executor(self._admin_pool, self._open, vid) for vid in ids)
        )
        for vol in opened:
            self.volumes[vol.id] = vol
        if self.config.compaction_check_interval_s > 0:
            self._compaction_task = asyncio.create_task(self._compact_in_background())
        log.info("store node %s: %d volumes open", self.config.name, len(self.volumes))

    def _open(self, vid: int) -> Volume:
        t0 = time.monotonic()
        vol = open_volume(self.storage, vid, self.config.volume)
        log.info(
            "v%d open in %.2f s: %d live needles, %d scanned, %d torn bytes cut",
            vid,
            time.monotonic() - t0,
            vol.needles_live,
            vol.opened_scan_needles,
            vol.opened_torn_bytes,
        )
        return vol

    async def close(self) -> None:
        if self._compaction_task is not None:
            self._compaction_task.cancel()
            try:
                await self._compaction_task
            except asyncio.CancelledError:
                pass
        for job in self.jobs.values():
            if job.state == "running" and job.cancel is not None:
                job.cancel()
        loop = asyncio.get_running_loop()
        vols = list(self.volumes.values())
        self.volumes.clear()
        await asyncio.gather(*(loop.run_in_executor(self._admin_pool, v.close) for v in vols))
        self._device.close()
        self._admin_pool.shutdown(wait=True)

    # -- data path -----------------------------------------------------------------------------

    def volume(self, vid: int) -> Volume:
        vol = self.volumes.get(vid)
        if vol is None:
            raise VolumeNotFound(f"volume {vid} is not on this node")
        return vol

    def read_cached(self, vid: int, key: int, alt_key: int, cookie: int) -> NeedleRead | None:
        """The needle if its bytes are in the page cache; None when the device is needed.
        Never blocks. Raises NotFound, CorruptNeedle, VolumeNotFound."""
        vol = self.volume(vid)
        try:
            got = volume_read.read_cached(vol, key, alt_key, cookie)
        except NotFound:
            self.reads_not_found += 1
            raise
        except StoreError:
            self.reads_corrupt += 1
            raise
        if got is not None:
            self.reads += 1
            self.reads_from_cache += 1
            self.read_bytes += got.data_size
        return got

    async def read(self, vid: int, key: int, alt_key: int, cookie: int) -> NeedleRead:
        """Reads a needle that missed the page cache from the device (io_uring, or threads)."""
        vol = self.volume(vid)
        if self.reads_waiting >= self.config.read_queue_max:
            self.reads_refused += 1
            raise QueueFull("too many reads waiting for the disk")
        self.reads_waiting += 1
        try:
            gen, offset, length = volume_read.locate_pinned(vol, key, alt_key)
            try:
                raw = await self._device.read(gen.file, length, offset)
            finally:
                gen.unpin()
            got = volume_read.checked(
                raw, key=key, alt_key=alt_key, cookie=cookie, offset=offset, length=length
            )
        except NotFound:
            self.reads_not_found += 1
            raise
        except StoreError:
            self.reads_corrupt += 1
            raise
        except OSError:
            self.read_errors += 1
            raise
        finally:
            self.reads_waiting -= 1
        self.reads += 1
        self.reads_from_disk += 1
        self.read_bytes += got.data_size
        return got

    async def put(
        self,
        vid: int,
        key: int,
        alt_key: int,
        cookie: int,
        data: bytes | bytearray | memoryview,
        *,
        data_checksum: int | None = None,
    ) -> PutResult:
        vol = self.volume(vid)
        return await vol.put_async(key, alt_key, cookie, data, data_checksum=data_checksum)

    async def delete(self, vid: int, key: int, alt_key: int | None) -> DeleteResult:
        return await self.volume(vid).delete_async(key, alt_key)

    # -- administration ------------------------------------------------------------------------

    async def create_volume(self, vid: int) -> Volume:
        if not 0 <= vid <= VOLUME_ID_MAX:
            raise ValueError(f"volume id must be within 0..{VOLUME_ID_MAX}")
        async with self._admin_lock:
            if vid in self.volumes:
                raise VolumeExists(f"volume {vid} exists")
            if len(self.volumes) >= self.config.volumes_max:
                raise Busy(f"this node holds volumes_max={self.config.volumes_max} volumes")
            loop = asyncio.get_running_loop()
            vol = await loop.run_in_executor(
                self._admin_pool, create_volume, self.storage, vid, self.config.volume
            )
            self.volumes[vid] = vol
            return vol

    async def set_mode(self, vid: int, mode: Mode) -> VolumeState:
        vol = self.volume(vid)
        if mode is Mode.WRITABLE:
            state = VolumeState()
        elif mode is Mode.READ_ONLY:
            state = read_only(Reason.OPERATOR, "set by an operator")
        else:
            state = sealed("sealed by an operator")
        return await asyncio.wrap_future(vol.change_state(state))

    def start_job(self, vid: int, kind: str, *, bytes_per_s_max: float | None = None) -> Job:
        """Starts a compaction or verify of volume `vid`; Busy if one of the kind runs."""
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        vol = self.volume(vid)
        current = self.jobs.get((vid, kind))
        if current is not None and current.state == "running":
            raise Busy(f"a {kind} of volume {vid} is already running")
        job = Job(kind=kind, volume_id=vid)
        loop = asyncio.get_running_loop()
        if kind == "compact":
            compaction = Compaction(
                vol, bytes_per_s_max=bytes_per_s_max or self.config.compaction_bytes_per_s_max
            )
            if vol.compaction is not None and not vol.compaction.done:
                raise Busy(f"volume {vid} is already being compacted")
            job.cancel = compaction.cancel

            fut = loop.run_in_executor(self._admin_pool, lambda: asdict(compaction.run()))
            self._watch_compaction(job, compaction)
        else:
            cancelled = [False]
            job.cancel = lambda: cancelled.__setitem__(0, True)

            def progress(done: int, total: int) -> None:
                job.progress = done / total if total else 1.0

            def run_verify() -> dict[str, Any]:
                return asdict(verify(vol, progress=progress, cancel=lambda: cancelled[0]))

            fut = loop.run_in_executor(self._admin_pool, run_verify)
        self.jobs[(vid, kind)] = job

        def finished(f: asyncio.Future[dict[str, Any]]) -> None:
            job.finished_unix_s = time.time()
            exc = f.exception()
            if exc is not None:
                job.state = "failed"
                job.error = f"{exc.__class__.__name__}: {exc}"
            else:
                job.state = "done"
                job.result = f.result()
                job.progress = 1.0
            job.finished.set()

        fut.add_done_callback(finished)
        return job

    def _watch_compaction(self, job: Job, compaction: Compaction) -> None:
        async def watch() -> None:
            while not job.finished.is_set():
                r = compaction.report()
                if r.bytes_total:
                    job.progress = min(1.0, r.bytes_copied / r.bytes_total)
                try:
                    await asyncio.wait_for(job.finished.wait(), 0.2)
                except TimeoutError:
                    pass

        task = asyncio.get_running_loop().create_task(watch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compact_in_background(self) -> None:
        """Compacts, one at a time, the volumes whose garbage passes the thresholds."""
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.compaction_check_interval_s)
            for vid, vol in list(self.volumes.items()):
                st = vol.statistics()
                due = (
                    st.garbage_ratio >= cfg.compaction_garbage_ratio_min
                    and st.garbage_bytes >= cfg.compaction_garbage_bytes_min
                    and not st.compacting
                    and st.reason != Reason.IO_ERROR.value
                )
                if not due:
                    continue
                try:
                    job = self.start_job(vid, "compact")
                except StoreError as e:
                    log.info("v%d: background compaction not started: %s", vid, e)
                    continue
                await job.finished.wait()
                if job.state == "failed":
                    log.error("v%d: background compaction failed: %s", vid, job.error)

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            node_id=self.config.name,
            failure_domain=self.config.failure_domain,
            started_unix_s=self.started_unix_s,
            volumes=[v.statistics() for v in self.volumes.values()],
            reads=self.reads,
            read_bytes=self.read_bytes,
            reads_from_cache=self.reads_from_cache,
            reads_from_disk=self.reads_from_disk,
            reads_not_found=self.reads_not_found,
            reads_corrupt=self.reads_corrupt,
            read_errors=self.read_errors,
            reads_waiting=self.reads_waiting,
            reads_refused=self.reads_refused,
            free_bytes=self.storage.free_bytes(),
        )
