"""What every upload (multipart and tus) is admitted under, besides its slot (api.context):
the user's quota of the sliding day, the staging disk's cap and the body's minimum rate.

- Quota: uploads and bytes of the last day from the media table (transformer.quota) plus
  the user's incomplete tus uploads at their declared length, which reserve their share;
  429 `upload_quota_exceeded` beyond [api] uploads_per_day_max / upload_bytes_per_day_max.
  Two uploads checked at the same moment may both pass: the quota can be exceeded by at
  most the user's uploads in flight.
- Staging: the bytes in <data_dir>/incoming and the tus part files, counted in this
  process's memory (one API process per data_dir, as the tus locks already require) and
  measured from the files at start; an upload that would pass staging_bytes_max is 503
  `staging_full` with Retry-After: the condition is transient, and 503 is what generic and
  tus clients retry (507 reads as permanent to most).
- Body rate: `paced` cuts a body that brings less than upload_body_rate_bytes_per_s_min
  over a span of upload_body_rate_grace_s, after the first such span (408 `body_too_slow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import StreamReader

from api import tus_store
from api.config import ApiConfig
from api.errors import BodyTooSlow, QuotaExceeded, StagingFull
from common.db import Database
from transformer import quota


async def check_quota(
    db: Database, config: ApiConfig, owner_id: int, *, incoming_bytes: int = 0
) -> None:
    """Raises QuotaExceeded when one more upload of `incoming_bytes` (0 when not known yet)
    would pass the owner's count or bytes of the sliding day."""
    now = time.time()
    used = await quota.usage(db, owner_id, now=now)
    pending_count, pending_bytes = await tus_store.pending(db, owner_id, now=now)
    count = used.count + pending_count
    size = used.size_bytes + pending_bytes
    reset_s = used.reset_s(now) or quota.WINDOW_S
    if count + 1 > config.uploads_per_day_max:
        raise QuotaExceeded(
            f"upload quota exceeded: at most {config.uploads_per_day_max} uploads a day "
            f"(uploads_per_day_max); retry in {int(reset_s) + 1} s",
            limit=config.uploads_per_day_max,
            remaining=config.uploads_per_day_max - count,
            reset_s=reset_s,
        )
    if size + max(1, incoming_bytes) > config.upload_bytes_per_day_max:
        this = f", this upload {incoming_bytes}" if incoming_bytes else ""
        raise QuotaExceeded(
            f"upload quota exceeded: at most {config.upload_bytes_per_day_max} bytes a day "
            f"(upload_bytes_per_day_max), {size} used{this}; retry in {int(reset_s) + 1} s",
            limit=config.upload_bytes_per_day_max,
            remaining=config.upload_bytes_per_day_max - size,
            reset_s=reset_s,
        )


@dataclass(frozen=True, slots=True)
class StagingStatistics:
    used_bytes: int
    max_bytes: int


class Staging:
    """The staging disk's bytes, counted as they are written and removed. Not thread-safe:
    call it from the event loop only."""

    def __init__(self, max_bytes: int, used_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = used_bytes

    def check(self, size_bytes: int) -> None:
        """Raises StagingFull when `size_bytes` more would not fit now."""
        if self.used_bytes + size_bytes > self.max_bytes:
            raise StagingFull(
                f"the upload staging space is full ({self.max_bytes} bytes, "
                "staging_bytes_max); retry later"
            )

    def reserve(self, size_bytes: int) -> None:
        """Counts `size_bytes` about to be written; raises StagingFull when they do not fit."""
        self.check(size_bytes)
        self.used_bytes += size_bytes

    def release(self, size_bytes: int) -> None:
        self.used_bytes = max(0, self.used_bytes - size_bytes)

    def statistics(self) -> StagingStatistics:
        return StagingStatistics(self.used_bytes, self.max_bytes)


def open_staging(config: ApiConfig) -> Staging:
    """The staging count at start (blocking: run it on a thread): multipart spools left by
    a stopped process are removed (their requests are gone), tus part files are measured."""
    incoming = config.data_dir / "incoming"
    for leftover in _files(incoming):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    used = 0
    for part in _files(config.data_dir / "tus"):
        with contextlib.suppress(FileNotFoundError):
            used += part.stat().st_size
    return Staging(config.staging_bytes_max, used)


def _files(directory: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(directory) if e.is_file()]
    except FileNotFoundError:
        return []


@contextlib.asynccontextmanager
async def paced(content: StreamReader, config: ApiConfig) -> AsyncIterator[None]:
    """Runs the block (which reads the body from `content`) under the minimum body rate:
    at the end of each span of upload_body_rate_grace_s after the first, the span must have
    brought rate x span bytes, or the block is cancelled and BodyTooSlow raised. Bytes are
    counted as they arrive (StreamReader.total_bytes), whoever reads them; once the whole
    body is in, nothing is cut."""
    span_s = config.upload_body_rate_grace_s
    span_bytes_min = config.upload_body_rate_bytes_per_s_min * span_s
    loop = asyncio.get_running_loop()
    span_start_bytes = content.total_bytes
    cut = asyncio.timeout(None)
    handle: asyncio.TimerHandle | None = None

    def check(first: bool) -> None:
        nonlocal handle, span_start_bytes
        if content.is_eof():
            return
        if not first and content.total_bytes - span_start_bytes < span_bytes_min:
            cut.reschedule(loop.time())
            return
        span_start_bytes = content.total_bytes
        handle = loop.call_later(span_s, check, False)

    handle = loop.call_later(span_s, check, True)
    try:
        async with cut:
            yield
    except TimeoutError:
        if not cut.expired():
            raise
        raise BodyTooSlow(
            f"the body arrived slower than {config.upload_body_rate_bytes_per_s_min} bytes/s "
            f"over {span_s:g} s (upload_body_rate_bytes_per_s_min)"
        ) from None
    finally:
        if handle is not None:
            handle.cancel()
