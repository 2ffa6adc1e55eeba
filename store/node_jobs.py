"""Node jobs: compaction, verify, scrub and pull of one volume, each a `LocalJob`
(common/jobs/local.py) polled over HTTP, and the background compaction loop.

One job of each kind per volume runs at a time; the last one of each kind stays in `jobs`
for GET /volumes/{id}/{kind}. Every job is stopped the same way, `LocalJob.cancel()`: the
work sees the cancel at its throttle (compaction, verify and scrub on an admin thread, a
pull's copy on the loop, which also has its task cancelled). A job's `finished` is set only
once its thread has returned, so `stop_volume_work` and `close` may then close the volume.
A cancelled pull keeps its temp files for a later pull to resume (store/volume_pull.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any, Final
from urllib.parse import urlsplit

from common.credentials import Credentials, Purpose
from common.jobs.local import LocalJob, until_done
from store.client import DatChunk, StoreClient, StoreClientError
from store.config import StoreConfig
from store.errors import (
    NodeBusy,
    OffsetPastEnd,
    PullFailed,
    StoreBadRequest,
    StoreError,
    VolumeExists,
)
from store.registry import VolumeRegistry, check_volume_id
from store.scrubber import Scrubber
from store.volume_checking import verify
from store.volume_compact import Compaction
from store.volume_pull import VolumePull
from store.volume_state import Reason

log = logging.getLogger("pinhole.store")

# Jobs started with start_job; "pull" has start_pull.
JOB_KINDS: Final = ("compact", "verify", "scrub")
# One request of a pull to its source waits at most this long.
PULL_REQUEST_TIMEOUT_S: Final = 60.0


def job_json(job: LocalJob) -> dict[str, Any]:
    """A job as the HTTP API shows it (docs/api/store.md)."""
    return {
        "kind": job.kind,
        "volume_id": job.subject,
        "state": job.state.value,
        "progress": round(job.progress, 4),
        "started_unix_s": job.started_unix_s,
        "finished_unix_s": job.finished_unix_s,
        "result": job.result,
        "error": job.error,
    }


class NodeJobs:
    def __init__(
        self,
        registry: VolumeRegistry,
        scrubber: Scrubber,
        *,
        config: StoreConfig,
        credentials: Credentials | None,
        admin_pool: Executor,
        transfer_pool: Executor,
    ) -> None:
        self._registry = registry
        self._scrubber = scrubber
        self._config = config
        self._credentials = credentials
        self._admin_pool = admin_pool
        self._transfer_pool = transfer_pool
        # (volume id, kind) -> the last job of that kind on that volume.
        self.jobs: dict[tuple[int, str], LocalJob] = {}

    def running(self, vid: int, kind: str) -> LocalJob | None:
        job = self.jobs.get((vid, kind))
        return job if job is not None and job.running else None

    def refuse_if_pulling(self, vid: int) -> None:
        if self.running(vid, "pull"):
            raise NodeBusy(f"volume {vid} is being pulled to this node")

    async def _on_admin_thread(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        result: dict[str, Any] = await until_done(loop.run_in_executor(self._admin_pool, fn))
        return result

    def start_job(self, vid: int, kind: str, *, bytes_per_s_max: float | None = None) -> LocalJob:
        """Starts a compaction, verify or scrub of volume `vid`; NodeBusy if one of the kind
        runs."""
        if kind not in JOB_KINDS:
            raise StoreBadRequest(f"unknown job kind {kind!r}")
        vol = self._registry.volume(vid)
        if self.running(vid, kind):
            raise NodeBusy(f"a {kind} of volume {vid} is already running")
        job = LocalJob(kind, vid)
        if kind == "scrub":
            job.start(self._scrubber.scrub(vid, job=job, bytes_per_s_max=bytes_per_s_max))
        elif kind == "compact":
            if vol.compaction is not None and not vol.compaction.done:
                raise NodeBusy(f"volume {vid} is already being compacted")
            rate = bytes_per_s_max or self._config.compaction_bytes_per_s_max
            compaction = Compaction(vol, throttle=job.throttle(rate), progress=job.set_progress)
            job.start(self._on_admin_thread(lambda: asdict(compaction.run())))
        else:
            throttle = job.throttle(bytes_per_s_max)
            job.start(
                self._on_admin_thread(
                    lambda: asdict(verify(vol, progress=job.set_progress, throttle=throttle))
                )
            )
        self.jobs[(vid, kind)] = job
        return job

    def start_pull(
        self, vid: int, source: str, *, bytes_per_s_max: float | None = None
    ) -> LocalJob:
        """Starts copying volume `vid` from the store node at `source` (store/volume_pull.py).
        VolumeExists when the volume is here already, NodeBusy when a pull of it runs."""
        check_volume_id(vid)
        parsed = urlsplit(source)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StoreBadRequest("source must be the http:// URL of a store node")
        if bytes_per_s_max is not None and bytes_per_s_max <= 0:
            raise StoreBadRequest("bytes_per_s_max must be positive")
        registry = self._registry
        if vid in registry.volumes:
            raise VolumeExists(f"volume {vid} is already on this node")
        if self.running(vid, "pull"):
            raise NodeBusy(f"a pull of volume {vid} is already running")
        registry.check_room()
        creds = self._credentials
        if creds is None or not (creds.holds(Purpose.NODE) or creds.holds(Purpose.ADMIN)):
            raise NodeBusy("this node holds no node credential to read another node with")
        loop = asyncio.get_running_loop()
        job = LocalJob("pull", vid)
        pull = VolumePull(
            storage=registry.storage,
            vid=vid,
            source=source,
            read_dat=lambda offset, length: read(offset, length),
            run_blocking=lambda fn: loop.run_in_executor(self._transfer_pool, fn),
            throttle=job.throttle(bytes_per_s_max or self._config.pull_bytes_per_s_max),
            progress=job.set_progress,
        )
        client = StoreClient(source, credentials=creds, timeout_s=PULL_REQUEST_TIMEOUT_S)

        async def read(offset: int, length: int) -> DatChunk:
            try:
                return await client.read_dat(vid, offset, length)
            except StoreClientError as e:
                if e.status == 416:
                    raise OffsetPastEnd(str(e)) from e
                raise PullFailed(f"volume {vid}: the source {source} failed: {e}") from e

        async def run() -> dict[str, Any]:
            try:
                await pull.copy()
            finally:
                await client.close()
            async with registry.lock:
                if vid in registry.volumes:
                    raise VolumeExists(f"volume {vid} appeared on this node during the pull")
                # Once the rename may have happened the volume is this node's: a cancel
                # waits for the install and registers the volume (a DELETE then finds it).
                installing = asyncio.ensure_future(
                    registry.run_admin(lambda: pull.install(self._config.volume))
                )
                try:
                    vol = await asyncio.shield(installing)
                except asyncio.CancelledError:
                    await asyncio.wait([installing])
                    if not installing.cancelled() and installing.exception() is None:
                        registry.add(installing.result())
                    raise
                registry.add(vol)
            log.info("v%d: pulled from %s, %d live needles", vid, source, vol.needles_live)
            return {**asdict(pull.report()), "needles_live": vol.needles_live}

        job.start(run())
        self.jobs[(vid, "pull")] = job
        return job

    async def cancel(self, job: LocalJob | None) -> None:
        """Cancels `job` (if running) and waits until it has ended."""
        if job is not None and job.running:
            job.cancel()
            await job.finished.wait()

    async def stop_volume_work(self, vid: int) -> None:
        """Cancels the compaction, verify and scrub of volume `vid` and waits for them."""
        for kind in JOB_KINDS:
            await self.cancel(self.running(vid, kind))

    async def close(self) -> None:
        running = [job for job in self.jobs.values() if job.running]
        for job in running:
            job.cancel()
        for job in running:
            await job.finished.wait()

    async def compact_in_background(self) -> None:
        """Compacts, one at a time, the volumes whose garbage passes the thresholds."""
        cfg = self._config
        while True:
            await asyncio.sleep(cfg.compaction_check_interval_s)
            for vid, vol in list(self._registry.volumes.items()):
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
                if job.error is not None:
                    log.error("v%d: background compaction failed: %s", vid, job.error)
