"""A store node: the volumes of one data directory, served to the event loop.

The node owns the executors: blocking reads (page-cache misses) run on `read_queue_depth`
threads, which is the node's disk queue depth; volume administration (open, create,
compaction, verify, scrub, close, delete) runs on a small admin pool; volume file transfers
(exports to a pulling node, the writes of a pull) on a transfer pool of their own, so that a
long compaction never stalls a replica move. Nothing here blocks the loop: reads first try
the page cache without waiting (store/volume_read.read_cached), writes wait on the volume
writer's future.

Jobs (compact, verify, scrub, pull) are long operations on one volume, one of each kind per
volume at a time, polled over HTTP; node.close() cancels them (a cancelled pull keeps its
temp files for a later pull to resume: store/volume_pull.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

from common.credentials import Credentials, Purpose
from store import volume_read
from store.client import DatChunk, StoreClient, StoreClientError
from store.config import StoreConfig
from store.device_reader import DeviceReader
from store.errors import Busy, NotFound, QueueFull, StoreError, VolumeExists, VolumeNotFound
from store.scrubber import Scrubber, ScrubStatistics
from store.storage import OsStorage, Storage
from store.volume import Volume, VolumeStatistics
from store.volume_checking import verify
from store.volume_compact import Compaction
from store.volume_loading import create_volume, open_volume, remove_volume_files, volume_ids
from store.volume_pull import (
    DAT_READ_BYTES_MAX,
    PullFailed,
    SourcePastEnd,
    VolumePull,
    pull_leftovers,
    remove_pull_files,
)
from store.volume_read import NeedleRead
from store.volume_state import Mode, Reason, VolumeState, read_only, sealed
from store.volume_write import DeleteResult, PutResult

if TYPE_CHECKING:
    from store.heartbeat import Heartbeat, HeartbeatStatistics

log = logging.getLogger("pinhole.store")

T = TypeVar("T")

ADMIN_THREADS: Final = 4
TRANSFER_THREADS: Final = 2
# Jobs started with start_job; "pull" has start_pull.
JOB_KINDS: Final = ("compact", "verify", "scrub")
VOLUME_ID_MAX: Final = 2**32 - 1
# One request of a pull to its source waits at most this long.
PULL_REQUEST_TIMEOUT_S: Final = 60.0


class OffsetPastEnd(StoreError):
    """A volume file read (GET /volumes/{id}/dat) starts past the volume's durable end."""

    code = "offset_past_end"


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
    # Jobs that run on the event loop (scrub, pull) rather than on one admin thread.
    task: asyncio.Task[None] | None = None
    progress_of: Callable[[], float] | None = None

    def _progress(self) -> float:
        if self.progress_of is not None and self.state == "running":
            return self.progress_of()
        return self.progress

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "volume_id": self.volume_id,
            "state": self.state,
            "progress": round(self._progress(), 4),
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
    reads_internal: int
    dat_reads: int
    dat_read_bytes: int
    free_bytes: int
    scrub: ScrubStatistics
    heartbeat: HeartbeatStatistics | None


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
        self.volumes: dict[int, Volume] = {}
        self.jobs: dict[tuple[int, str], Job] = {}
        self.started_unix_s = time.time()
        # Set whenever the set of volumes or a volume's state changes (the heartbeat sends
        # its next beat at once).
        self.changed = asyncio.Event()
        self.scrubber = Scrubber(self)
        self.heartbeat: Heartbeat | None = None
        self._device = DeviceReader(config.read_queue_depth)
        self._admin_pool = ThreadPoolExecutor(ADMIN_THREADS, thread_name_prefix="store-admin")
        self._transfer_pool = ThreadPoolExecutor(
            TRANSFER_THREADS, thread_name_prefix="store-transfer"
        )
        self._admin_lock = asyncio.Lock()
        self._compaction_task: asyncio.Task[None] | None = None
        self._scrub_task: asyncio.Task[None] | None = None
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
        self.reads_internal = 0
        self.dat_reads = 0
        self.dat_read_bytes = 0

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
        # Interrupted pulls are not volumes: they wait for a pull to resume them, or for
        # DELETE /volumes/{id} to remove them.
        for vid, nbytes in (await self.run_admin(lambda: pull_leftovers(self.storage))).items():
            log.info("v%d: an interrupted pull left %d bytes (resumable)", vid, nbytes)
        if self.config.compaction_check_interval_s > 0:
            self._compaction_task = asyncio.create_task(self._compact_in_background())
        if self.config.scrub_interval_s > 0:
            self._scrub_task = asyncio.create_task(
                self.scrubber.run_forever(self.config.scrub_interval_s)
            )
        log.info("store node %s: %d volumes open", self.config.name, len(self.volumes))

    async def run_admin(self, fn: Callable[[], T]) -> T:
        """Runs a blocking call on the admin pool."""
        return await asyncio.get_running_loop().run_in_executor(self._admin_pool, fn)

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
        self.scrubber.closing = True  # a scrub pass on a thread stops at its next needle
        for task in (self._compaction_task, self._scrub_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        running = [job for job in self.jobs.values() if job.state == "running"]
        for job in running:
            if job.cancel is not None:
                job.cancel()
        # Loop-side jobs end at once when cancelled; thread jobs see their cancel flag and
        # end on their own (the pool's shutdown below waits for them).
        for job in running:
            if job.task is not None:
                await job.finished.wait()
        await self.scrubber.close()
        loop = asyncio.get_running_loop()
        vols = list(self.volumes.values())
        self.volumes.clear()
        await asyncio.gather(*(loop.run_in_executor(self._admin_pool, v.close) for v in vols))
        self._device.close()
        self._admin_pool.shutdown(wait=True)
        self._transfer_pool.shutdown(wait=True)

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
        got, _ = await self._read_checked(vid, key, alt_key, cookie)
        self.reads += 1
        self.reads_from_disk += 1
        self.read_bytes += got.data_size
        return got

    async def _read_checked(
        self, vid: int, key: int, alt_key: int, cookie: int | None
    ) -> tuple[NeedleRead, int]:
        """(the verified needle, its cookie): the disk queue's bound and the error counters
        shared by reads. `cookie` None takes the stored one (internal reads) and tries the
        page cache before the device."""
        vol = self.volume(vid)
        if self.reads_waiting >= self.config.read_queue_max:
            self.reads_refused += 1
            raise QueueFull("too many reads waiting for the disk")
        self.reads_waiting += 1
        try:
            gen, offset, length = volume_read.locate_pinned(vol, key, alt_key)
            try:
                raw = gen.file.read_nowait(length, offset) if cookie is None else None
                if raw is None:
                    raw = await self._device.read(gen.file, length, offset)
            finally:
                gen.unpin()
            if cookie is None:
                cookie = volume_read.stored_cookie(raw)
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
        return got, cookie

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
        vol = self.volume(vid)
        return await vol.put_async(
            key, alt_key, cookie, data, data_checksum=data_checksum, repair=repair
        )

    async def read_internal(self, vid: int, key: int, alt_key: int) -> tuple[NeedleRead, int]:
        """(the verified needle, its cookie) without the cookie in hand: replica repair and
        copies between nodes. The same checks as a read; deleted needles are NotFound."""
        result = await self._read_checked(vid, key, alt_key, None)
        self.reads_internal += 1
        return result

    async def delete(self, vid: int, key: int, alt_key: int | None) -> DeleteResult:
        return await self.volume(vid).delete_async(key, alt_key)

    # -- administration ------------------------------------------------------------------------

    def _job_running(self, vid: int, kind: str) -> Job | None:
        job = self.jobs.get((vid, kind))
        return job if job is not None and job.state == "running" else None

    async def create_volume(self, vid: int) -> Volume:
        if not 0 <= vid <= VOLUME_ID_MAX:
            raise ValueError(f"volume id must be within 0..{VOLUME_ID_MAX}")
        async with self._admin_lock:
            if vid in self.volumes:
                raise VolumeExists(f"volume {vid} exists")
            if self._job_running(vid, "pull"):
                raise Busy(f"volume {vid} is being pulled to this node")
            if len(self.volumes) >= self.config.volumes_max:
                raise Busy(f"this node holds volumes_max={self.config.volumes_max} volumes")
            loop = asyncio.get_running_loop()
            vol = await loop.run_in_executor(
                self._admin_pool, create_volume, self.storage, vid, self.config.volume
            )
            self.volumes[vid] = vol
        self.changed.set()
        return vol

    async def delete_volume(self, vid: int) -> None:
        """Closes volume `vid` and removes its files (and those of a pull of it, which is
        cancelled). Jobs running on it are cancelled first. VolumeNotFound when the node has
        neither the volume nor a pull of it."""
        pull = self._job_running(vid, "pull")
        if pull is not None and pull.cancel is not None:
            pull.cancel()
            await pull.finished.wait()
        async with self._admin_lock:
            vol = self.volumes.pop(vid, None)
            if vol is not None:
                self.changed.set()
                for kind in JOB_KINDS:
                    job = self._job_running(vid, kind)
                    if job is not None:
                        if job.cancel is not None:
                            job.cancel()
                        await job.finished.wait()

            def remove() -> bool:
                removed = remove_pull_files(self.storage, vid)
                if vol is not None:
                    vol.close(checkpoint=False)
                    remove_volume_files(self.storage, vid)
                    removed = True
                return removed

            if not await self.run_admin(remove):
                raise VolumeNotFound(f"volume {vid} is not on this node")
        log.info("v%d: deleted from this node", vid)

    async def read_dat(self, vid: int, offset: int, length: int) -> DatChunk:
        """Up to `length` (<= DAT_READ_BYTES_MAX) raw bytes of the volume file from
        `offset`, never past the durable end, with that end and the compaction revision of
        the file they were read from. OffsetPastEnd when offset > end."""
        if not 0 <= length <= DAT_READ_BYTES_MAX:
            raise ValueError(f"length must be within 0..{DAT_READ_BYTES_MAX}")
        if offset < 0:
            raise ValueError("offset must not be negative")
        vol = self.volume(vid)

        def read() -> DatChunk:
            while True:
                gen = vol.pin_generation()
                end = vol.end
                # Compaction swaps the generation, then the end: the end read while `gen`
                # is still current belongs to it (or to a file that is only longer).
                if vol.generation is gen:
                    break
                gen.unpin()
            try:
                end = min(end, gen.file.size())
                if offset > end:
                    raise OffsetPastEnd(f"offset {offset} is past the volume's end {end}")
                data = gen.file.read(min(length, end - offset), offset) if length else b""
                return DatChunk(data, end, gen.superblock.compaction_revision)
            finally:
                gen.unpin()

        chunk = await asyncio.get_running_loop().run_in_executor(self._transfer_pool, read)
        self.dat_reads += 1
        self.dat_read_bytes += len(chunk.data)
        return chunk

    def start_pull(self, vid: int, source: str, *, bytes_per_s_max: float | None = None) -> Job:
        """Starts copying volume `vid` from the store node at `source` (store/volume_pull.py).
        VolumeExists when the volume is here already, Busy when a pull of it runs."""
        if not 0 <= vid <= VOLUME_ID_MAX:
            raise ValueError(f"volume id must be within 0..{VOLUME_ID_MAX}")
        parsed = urlsplit(source)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("source must be the http:// URL of a store node")
        if bytes_per_s_max is not None and bytes_per_s_max <= 0:
            raise ValueError("bytes_per_s_max must be positive")
        if vid in self.volumes:
            raise VolumeExists(f"volume {vid} is already on this node")
        if self._job_running(vid, "pull"):
            raise Busy(f"a pull of volume {vid} is already running")
        if len(self.volumes) >= self.config.volumes_max:
            raise Busy(f"this node holds volumes_max={self.config.volumes_max} volumes")
        creds = self.credentials
        if creds is None or not (creds.holds(Purpose.NODE) or creds.holds(Purpose.ADMIN)):
            raise Busy("this node holds no node credential to read another node with")
        loop = asyncio.get_running_loop()
        pull = VolumePull(
            storage=self.storage,
            vid=vid,
            source=source,
            read_dat=lambda offset, length: read(offset, length),
            run_blocking=lambda fn: loop.run_in_executor(self._transfer_pool, fn),
            bytes_per_s_max=bytes_per_s_max or self.config.pull_bytes_per_s_max,
        )
        client = StoreClient(source, credentials=creds, timeout_s=PULL_REQUEST_TIMEOUT_S)

        async def read(offset: int, length: int) -> DatChunk:
            try:
                return await client.read_dat(vid, offset, length)
            except StoreClientError as e:
                if e.status == 416:
                    raise SourcePastEnd(str(e)) from e
                raise PullFailed(f"volume {vid}: the source {source} failed: {e}") from e

        async def run() -> dict[str, Any]:
            try:
                await pull.copy()
            finally:
                await client.close()
            async with self._admin_lock:
                if vid in self.volumes:
                    raise VolumeExists(f"volume {vid} appeared on this node during the pull")
                # Once the rename may have happened the volume is this node's: a cancel
                # waits for the install and registers the volume (a DELETE then finds it).
                installing = asyncio.ensure_future(
                    self.run_admin(lambda: pull.install(self.config.volume))
                )
                try:
                    vol = await asyncio.shield(installing)
                except asyncio.CancelledError:
                    await asyncio.wait([installing])
                    if not installing.cancelled() and installing.exception() is None:
                        self.volumes[vid] = installing.result()
                        self.changed.set()
                    raise
                self.volumes[vid] = vol
            self.changed.set()
            log.info("v%d: pulled from %s, %d live needles", vid, source, vol.needles_live)
            return {**asdict(pull.report()), "needles_live": vol.needles_live}

        job = Job(kind="pull", volume_id=vid)
        job.progress_of = lambda: pull.progress
        self._run_on_loop(job, run())
        return job

    def _run_on_loop(self, job: Job, coro: Coroutine[Any, Any, dict[str, Any]]) -> None:
        """Runs a job's coroutine as a task; cancelling the job cancels the task."""

        async def run() -> None:
            try:
                job.result = await coro
                job.state = "done"
                job.progress = 1.0
            except asyncio.CancelledError:
                job.state = "failed"
                job.error = "cancelled"
            except Exception as e:
                job.state = "failed"
                job.error = f"{e.__class__.__name__}: {e}"
                log.warning("v%d: %s job failed: %s", job.volume_id, job.kind, job.error)
            finally:
                job.finished_unix_s = time.time()
                job.finished.set()

        task = asyncio.get_running_loop().create_task(run())
        job.task = task

        def cancel() -> None:
            task.cancel()

        job.cancel = cancel
        self.jobs[(job.volume_id, job.kind)] = job

    async def set_mode(self, vid: int, mode: Mode) -> VolumeState:
        vol = self.volume(vid)
        if mode is Mode.WRITABLE:
            state = VolumeState()
        elif mode is Mode.READ_ONLY:
            state = read_only(Reason.OPERATOR, "set by an operator")
        else:
            state = sealed("sealed by an operator")
        try:
            return await asyncio.wrap_future(vol.change_state(state))
        finally:
            self.changed.set()

    def start_job(self, vid: int, kind: str, *, bytes_per_s_max: float | None = None) -> Job:
        """Starts a compaction, verify or scrub of volume `vid`; Busy if one of the kind
        runs."""
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        vol = self.volume(vid)
        current = self.jobs.get((vid, kind))
        if current is not None and current.state == "running":
            raise Busy(f"a {kind} of volume {vid} is already running")
        job = Job(kind=kind, volume_id=vid)
        loop = asyncio.get_running_loop()
        if kind == "scrub":
            cancelled = [False]

            def scrub_progress(done: int, total: int) -> None:
                job.progress = done / total if total else 1.0

            self._run_on_loop(
                job,
                self.scrubber.scrub(
                    vid,
                    bytes_per_s_max=bytes_per_s_max,
                    progress=scrub_progress,
                    cancel=lambda: cancelled[0],
                ),
            )
            cancel_task = job.cancel

            def cancel_scrub() -> None:
                cancelled[0] = True  # the verify thread stops at its next needle
                if cancel_task is not None:
                    cancel_task()

            job.cancel = cancel_scrub
            return job
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
            node_id=self.node_id,
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
            reads_internal=self.reads_internal,
            dat_reads=self.dat_reads,
            dat_read_bytes=self.dat_read_bytes,
            free_bytes=self.storage.free_bytes(),
            scrub=self.scrubber.statistics(),
            heartbeat=self.heartbeat.statistics() if self.heartbeat is not None else None,
        )
