"""The media job worker: claims jobs, makes the variants, publishes the media.

One worker runs one job at a time (the work is CPU-bound; run as many worker processes as
there are cores to spare: `pinhole worker serve`, `[workers] count` under `pinhole up`).

A job, idempotent from start to end so that it can run again after any crash:
1. read the original through the router (checksummed, failing over between replicas),
   with the original's own cookie and the read credential (the router serves originals
   to nobody else);
2. photo: the ladder (transformer.ladder, in a thread: libvips releases the GIL);
   video: probe, poster, HLS ladder (ffmpeg), playlists naming the segments' photo URLs;
3. put every variant, keyed (media id, rendition << 8 | format), preferring the original's
   volume; each written variant is recorded at once, so a re-run rewrites the same keys
   (the store keeps the newest needle of a key; compaction reclaims the older one);
4. one transaction publishes the media (ready) and completes the job. A worker killed
   before it leaves the media processing, and the job's lease runs out, so another attempt
   starts over. If the media expired meanwhile, what the job wrote is deleted again.

Jobs run on the job framework's runner (common/jobs/runner.py), which renews the lease
while a job runs, backs failures off and dead-letters them (transformer/jobs.py).
Expired media are swept here too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import aiohttp

from common import request_ids
from common.credentials import Credentials, Purpose
from common.db import Database, migrate, open_database
from common.jobs import Clock, Job, JobLease, JobRunner, JobStore
from common.photo import EXTENSIONS, Format, alt_key, photo_path
from directory.writer import BlobWriter
from transformer import jobs, media_store, rekey, schema
from transformer import variants as v
from transformer.config import MediaConfig
from transformer.errors import Rejected, TranscodeFailed
from transformer.hls import master_playlist_text, rung_playlist_text
from transformer.ladder import make_photo_ladder
from transformer.placeholder import blurhash_of
from transformer.video import transcode_video
from transformer.video_probe import probe_video

log = logging.getLogger("pinhole.worker")

# Reads of the original go through the router with a Via header: the cache's admission
# rule then keeps these one-off reads out of the cache (they are not user views).
VIA: Final = "1.1 pinhole-worker"
READ_TIMEOUT_S: Final = 120.0
DOWNLOAD_CHUNK_BYTES: Final = 1 << 20


class Worker:
    def __init__(
        self,
        config: MediaConfig,
        db: Database,
        writer: BlobWriter,
        http: aiohttp.ClientSession,
        *,
        credentials: Credentials,
        name: str,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.writer = writer
        self.http = http
        self.name = name
        self._read_headers = {"Via": VIA, "Authorization": credentials.header(Purpose.READ)}
        self.store = JobStore(db, clock=clock)
        policy = jobs.retry_policy(config)
        self.runner = JobRunner(
            self.store,
            dict.fromkeys(jobs.KINDS, self._process),
            queues=[jobs.QUEUE],
            worker=name,
            lease_s=config.lease_s,
            policies=dict.fromkeys(jobs.KINDS, policy),
            after_job=self._after_job,
        )
        self._last_expiry = -math.inf
        self.busy = False  # holds a job now (/metrics)

    @property
    def jobs_done(self) -> int:
        return self.runner.statistics.done

    @property
    def jobs_failed(self) -> int:
        return self.runner.statistics.failed

    async def run(self, stop: asyncio.Event) -> None:
        """Claims and runs jobs until `stop` is set; sweeps expired media between jobs.
        Idle, it looks again after poll_interval_s, then less often (an idle worker costs
        little), up to poll_interval_s_max."""
        await self.runner.run(
            stop,
            idle_s=self.config.poll_interval_s,
            idle_s_max=self.config.poll_interval_s_max,
            between_jobs=self._expire_when_due,
        )

    async def run_job(self, job: Job) -> None:
        await self.runner.run_job(job)

    async def _expire_when_due(self) -> None:
        if time.monotonic() - self._last_expiry >= self.config.expire_interval_s:
            self._last_expiry = time.monotonic()
            await self.expire_once()

    async def _after_job(self, job: Job) -> None:
        if job.kind == jobs.REKEY.name:
            # The old needles' deletes, at once (outside the job: its lease is over).
            try:
                await self.drain_deletes()
            except Exception:
                log.exception("draining needle deletes failed; the expiry pass retries")

    async def _process(self, lease: JobLease) -> None:
        self.busy = True
        try:
            await self._process_job(lease)
        finally:
            self.busy = False

    async def _process_job(self, lease: JobLease) -> None:
        job = lease.job
        got = await media_store.get(self.db, job.subject_id)
        if got is None:
            raise TranscodeFailed(f"media {job.subject_id} has no row")
        row, rows = got
        if job.kind == jobs.REKEY.name:
            await self._rekey(lease, row, rows)
            return
        if row.status != media_store.MediaStatus.PROCESSING:
            await self._finish(lease, row, publish=None)
            return
        original = next(r for r in rows if r.rendition == v.ORIGINAL)
        if job.kind == jobs.PHOTO.name:
            await self._photo(lease, row, original)
        else:
            await self._video(lease, row, original)

    # -- reading and writing -------------------------------------------------------------

    def _url(self, row: media_store.MediaRow, volume_id: int, rendition: int, fmt: int) -> str:
        return photo_path(volume_id, row.media_id, row.cookie, rendition, Format(fmt))

    async def _read_original(
        self, row: media_store.MediaRow, original: media_store.VariantRow, sink: Path | None
    ) -> bytes:
        path = photo_path(
            original.volume_id, row.media_id, row.original_cookie, v.ORIGINAL, Format(original.fmt)
        )
        timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT_S)
        url = self.config.router_url + path
        async with self.http.get(url, headers=self._read_headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise TranscodeFailed(f"reading the original answered {resp.status}")
            if sink is None:
                return await resp.read()
            file = await asyncio.to_thread(open, sink, "wb")
            try:
                async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
                    await asyncio.to_thread(file.write, chunk)
            finally:
                await asyncio.to_thread(file.close)
            return b""

    async def _put(
        self,
        row: media_store.MediaRow,
        rendition: int,
        fmt: int,
        data: bytes,
        *,
        width: int,
        height: int,
    ) -> media_store.VariantRow:
        ref = await self.writer.put(
            row.media_id,
            alt_key(rendition, fmt),
            data,
            cookie=row.cookie,
            volume_id=row.original_volume_id,
        )
        variant = media_store.VariantRow(
            row.media_id, rendition, fmt, ref.volume_id, len(data), width, height
        )
        await media_store.record_variant(self.db, variant)
        return variant

    async def _bounded(self, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
        gate = asyncio.Semaphore(self.config.puts_inflight_max)

        async def one(call: Callable[[], Awaitable[Any]]) -> Any:
            async with gate:
                return await call()

        return list(await asyncio.gather(*(one(c) for c in calls)))

    # -- photo ----------------------------------------------------------------------------

    async def _photo(
        self, lease: JobLease, row: media_store.MediaRow, original: media_store.VariantRow
    ) -> None:
        data = await self._read_original(row, original, None)
        loop = asyncio.get_running_loop()
        try:
            ladder = await loop.run_in_executor(
                None,
                functools.partial(
                    make_photo_ladder, data, limits=self.config.limits, filter_id=row.filter_id
                ),
            )
        except Rejected as e:  # validated at upload: only a changed limit gets here
            raise TranscodeFailed(f"the original no longer passes validation: {e.code}") from e
        await self._bounded(
            [
                functools.partial(
                    self._put, row, e.rendition, int(e.fmt), e.data, width=e.width, height=e.height
                )
                for e in ladder.variants
            ]
        )
        await self._finish(
            lease,
            row,
            publish={
                "width": ladder.width,
                "height": ladder.height,
                "placeholder": ladder.placeholder,
            },
        )

    # -- video ----------------------------------------------------------------------------

    async def _video(
        self, lease: JobLease, row: media_store.MediaRow, original: media_store.VariantRow
    ) -> None:
        work = self.config.work_dir / f"job-{lease.job.job_id}-{os.getpid()}"
        await asyncio.to_thread(shutil.rmtree, work, True)
        await asyncio.to_thread(work.mkdir, parents=True)
        try:
            source = work / f"original.{EXTENSIONS[original.fmt]}"
            await self._read_original(row, original, source)
            info = await probe_video(source, self.config.limits)
            ladder = await transcode_video(
                source, work / "out", info, timeout_s=self.config.transcode_timeout_s
            )
            pw, ph = ladder.poster_width, ladder.poster_height
            await self._bounded(
                [
                    functools.partial(
                        self._put,
                        row,
                        v.POSTER,
                        Format.JPEG,
                        ladder.poster_jpeg,
                        width=pw,
                        height=ph,
                    ),
                    functools.partial(
                        self._put,
                        row,
                        v.POSTER,
                        Format.WEBP,
                        ladder.poster_webp,
                        width=pw,
                        height=ph,
                    ),
                ]
            )
            rung_urls = []
            for rung in ladder.rungs:
                segment_rows = await self._bounded(
                    [
                        functools.partial(self._put_file, row, rung, index, path)
                        for index, path in enumerate(rung.segments)
                    ]
                )
                segment_urls = [
                    self._url(row, s.volume_id, s.rendition, s.fmt) for s in segment_rows
                ]
                text = rung_playlist_text(rung, segment_urls, ladder.target_duration_s)
                playlist = await self._put(
                    row,
                    v.rung_playlist(rung.height),
                    Format.M3U8,
                    text.encode(),
                    width=rung.width,
                    height=rung.frame_height,
                )
                rung_urls.append(
                    self._url(row, playlist.volume_id, playlist.rendition, playlist.fmt)
                )
            master = master_playlist_text(ladder.rungs, rung_urls)
            await self._put(
                row,
                v.MASTER_PLAYLIST,
                Format.M3U8,
                master.encode(),
                width=info.width,
                height=info.height,
            )
            placeholder = await asyncio.to_thread(_placeholder_of, ladder.poster_jpeg)
            await self._finish(
                lease,
                row,
                publish={
                    "width": info.width,
                    "height": info.height,
                    "placeholder": placeholder,
                    "duration_s": info.duration_s,
                },
            )
        except Rejected as e:
            raise TranscodeFailed(f"the original no longer passes validation: {e.code}") from e
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _put_file(
        self, row: media_store.MediaRow, rung: Any, index: int, path: Path
    ) -> media_store.VariantRow:
        data = await asyncio.to_thread(path.read_bytes)
        return await self._put(
            row,
            v.segment(rung.height, index),
            Format.TS,
            data,
            width=rung.width,
            height=rung.frame_height,
        )

    # -- publishing and expiry ------------------------------------------------------------

    async def _finish(
        self, lease: JobLease, row: media_store.MediaRow, *, publish: dict[str, Any] | None
    ) -> None:
        published = False
        async with self.db.transaction(lock=jobs.LOCK) as conn:
            await lease.finish_in(conn)
            if publish is not None:
                published = await media_store.publish(conn, row.media_id, **publish)
        if publish is not None and not published:
            # Expired or deleted while the job ran: take back what the job wrote.
            await self._delete_needles(row.media_id)

    async def _delete_needles(self, media_id: int) -> None:
        got = await media_store.get(self.db, media_id)
        if got is None:
            return
        for var in got[1]:
            await self.writer.delete(var.volume_id, media_id, alt_key(var.rendition, var.fmt))

    # -- re-keys (transformer/rekey.py) ----------------------------------------------------

    async def _rekey(
        self, lease: JobLease, row: media_store.MediaRow, rows: list[media_store.VariantRow]
    ) -> None:
        """Rewrites the published variants under a new cookie, then swaps in one transaction
        with the job's completion; the old needles' deletes go out through the outbox."""
        new_cookie = await rekey.pending_cookie(self.db, row.media_id)
        done = await rekey.written(self.db, row.media_id)
        moved: dict[str, str] = {}  # old URL path -> new one, for the playlists
        old = rekey.order(rows)
        new: list[media_store.VariantRow] = []
        for var in old:
            old_path = rekey.url_path(var, row.media_id, row.cookie)
            written = done.get((var.rendition, var.fmt))
            if written is None and row.status == media_store.MediaStatus.READY:
                data = await self._read(old_path)
                if var.fmt == Format.M3U8:
                    data = rekey.rewrite_playlist(data, moved)
                ref = await self.writer.put(
                    row.media_id,
                    alt_key(var.rendition, var.fmt),
                    data,
                    cookie=new_cookie,
                    avoid_volume_ids=frozenset((var.volume_id,)),
                )
                written = dataclasses.replace(var, volume_id=ref.volume_id, size_bytes=ref.size)
                await rekey.record(self.db, written)
            if written is not None:
                new.append(written)
                moved[old_path] = rekey.url_path(written, row.media_id, new_cookie)
        async with self.db.transaction(lock=jobs.LOCK) as conn:
            await lease.finish_in(conn)
            swapped = await rekey.swap(conn, row.media_id, old, new)
        log.info(
            "media %d re-keyed (%d variants)%s",
            row.media_id,
            len(new),
            "" if swapped else ": gone meanwhile, new needles deleted",
        )

    async def _read(self, path: str) -> bytes:
        """A variant's bytes through the router (checksummed, failing over)."""
        timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT_S)
        url = self.config.router_url + path
        async with self.http.get(url, headers=self._read_headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise TranscodeFailed(f"reading {path} answered {resp.status}")
            return await resp.read()

    async def drain_deletes(self) -> int:
        """Hands the outbox's needle deletes to the directory (which records each before it
        answers, then delivers it to every replica and cache); how many went."""
        pending = await rekey.pending_deletes(self.db)
        for gone in pending:
            await self.writer.delete(gone.volume_id, gone.media_id, gone.alt_key)
            await rekey.delete_recorded(self.db, gone)
        return len(pending)

    async def expire_once(self) -> int:
        """Deletes the needles of media left unattached past their expiry; returns how many
        media expired. The deletes are recorded by the directory (and retried there) before
        the media is marked expired."""
        expired = await media_store.expired(
            self.db, now=time.time(), limit=self.config.expire_batch_max
        )
        for row in expired:
            await self._delete_needles(row.media_id)
            await media_store.mark_gone(
                self.db, row.media_id, status=media_store.MediaStatus.EXPIRED
            )
        if expired:
            log.info("expired %d unattached media", len(expired))
        await self.drain_deletes()  # what a re-key left, should its own drain have failed
        return len(expired)


def _placeholder_of(encoded: bytes) -> str:
    import pyvips

    return str(blurhash_of(pyvips.Image.new_from_buffer(encoded, "")))


async def run_worker(
    config: MediaConfig,
    *,
    credentials: Credentials,
    name: str,
    stop: asyncio.Event | None = None,
    started: Callable[[Worker], None] | None = None,
) -> None:
    """Opens the media database (migrated), the writer and an HTTP session and runs one
    worker until `stop` is set (or the task is cancelled); `started` is handed the worker
    before it runs (its /metrics reads it)."""
    stop = stop or asyncio.Event()
    if not config.database_url:
        await asyncio.to_thread(config.data_dir.mkdir, parents=True, exist_ok=True)
    db = await open_database(config.database, schema=config.database_schema or None)
    try:
        await migrate(db, schema.COMPONENT, schema.MIGRATIONS)
        async with (
            BlobWriter(config.directory_url, credentials=credentials) as writer,
            aiohttp.ClientSession(trace_configs=[request_ids.trace_config()]) as http,
        ):
            worker = Worker(
                config, db, writer, http, credentials=credentials, name=f"{name}:{os.getpid()}"
            )
            if started is not None:
                started(worker)
            await worker.run(stop)
    finally:
        await db.close()
