"""What every upload (multipart and tus) is admitted under, besides its slot (api.context):
the user's quota of the sliding day, the staging disk's cap and the body's minimum rate.

- Quota: uploads and bytes of the last day from the media table (transformer.quota) plus
  the user's incomplete tus uploads at their declared length, which reserve their share;
  429 `upload_quota_exceeded` beyond [api] uploads_per_day_max / upload_bytes_per_day_max.
  Two uploads checked at the same moment may both pass: the quota can be exceeded by at
  most the user's uploads in flight.
- Staging: the bytes in <data_dir>/incoming and the tus part files, measured from the
  files at start and counted as they are written and removed: in the process's memory
  with one API process, in a file of per-process slots shared by the API processes of
  one data dir with several (SLOTS_FILE); an upload that would pass staging_bytes_max is 503
  `staging_full` with Retry-After: the condition is transient, and 503 is what generic and
  tus clients retry (507 reads as permanent to most).
- Body rate: `paced` cuts a body that brings less than upload_body_rate_bytes_per_s_min
  over a span of upload_body_rate_grace_s, after the first such span (408 `body_too_slow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import StreamReader

from api import tus_store
from api.config import PROCESSES_MAX, ApiConfig
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


class _LocalCount:
    """The staging count of the one API process of a data dir."""

    def __init__(self, used_bytes: int) -> None:
        self.value = used_bytes

    def total(self) -> int:
        return self.value

    def add(self, delta: int) -> None:
        self.value = max(0, self.value + delta)


# The shared count's file (<data_dir>/SLOTS_FILE): SLOTS native signed 64-bit integers.
#
#     slot 0            | slot 1            | ... | slot PROCESSES_MAX
#     measured at start | process 0's delta |     | process PROCESSES_MAX - 1's delta
#
# Every slot has one writer: slot 0 is written by the `pinhole api serve` that starts the
# processes, before any of them runs; slot 1 + i by process i only (what it has staged
# minus what it has removed, negative when it removed what another staged). The bytes
# staged are the sum. A tus upload's part file is shared by the processes (any may PATCH
# it, another complete it), so bytes cannot be owned by one process; one writer per slot
# needs no lock, and each slot is written whole (one aligned 8-byte store).
SLOTS_FILE: Final = "staging.slots"
SLOT: Final = struct.Struct("q")
SLOTS: Final = 1 + PROCESSES_MAX
SLOTS_BYTES: Final = SLOT.size * SLOTS

assert SLOT.size == 8


class _SharedCount:
    """Process `index`'s view of the shared count (see SLOTS_FILE)."""

    def __init__(self, path: Path, index: int) -> None:
        if not 0 <= index < PROCESSES_MAX:
            raise ValueError(f"process index must be within 0..{PROCESSES_MAX - 1}")
        with path.open("r+b") as f:
            if os.fstat(f.fileno()).st_size != SLOTS_BYTES:
                raise ValueError(f"{path} is not a staging count of {SLOTS} slots")
            self._map = mmap.mmap(f.fileno(), SLOTS_BYTES)
        self._offset = SLOT.size * (1 + index)

    def total(self) -> int:
        # Each slot is stored whole (an aligned 8-byte store), so a read sees it old or
        # new; the copy is re-read until two agree, against a compiler splitting a store.
        while True:
            first = bytes(self._map)
            if bytes(self._map) == first:
                break
        return max(0, sum(int(v) for (v,) in SLOT.iter_unpack(first)))

    def add(self, delta: int) -> None:
        (own,) = SLOT.unpack_from(self._map, self._offset)
        SLOT.pack_into(self._map, self._offset, own + delta)


class Staging:
    """The staging disk's bytes, counted as they are written and removed: by this process
    alone (one API process) or shared by the API processes of one data dir (`open_shared_staging`).
    Not thread-safe: call it from the event loop only."""

    def __init__(
        self, max_bytes: int, used_bytes: int = 0, *, shared: _SharedCount | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self._count: _LocalCount | _SharedCount = shared or _LocalCount(used_bytes)

    @property
    def used_bytes(self) -> int:
        return self._count.total()

    def check(self, size_bytes: int) -> None:
        """Raises StagingFull when `size_bytes` more would not fit now."""
        if self.used_bytes + size_bytes > self.max_bytes:
            raise StagingFull(
                f"the upload staging space is full ({self.max_bytes} bytes, "
                "staging_bytes_max); retry later"
            )

    def reserve(self, size_bytes: int) -> None:
        """Counts `size_bytes` about to be written; raises StagingFull when they do not fit.
        With several processes two reservations made at the same moment may both pass: the
        cap can be passed by at most the chunks being reserved at that moment."""
        self.check(size_bytes)
        self._count.add(size_bytes)

    def release(self, size_bytes: int) -> None:
        self._count.add(-size_bytes)

    def statistics(self) -> StagingStatistics:
        return StagingStatistics(self.used_bytes, self.max_bytes)


def open_staging(config: ApiConfig) -> Staging:
    """The staging count at start (blocking: run it on a thread): multipart spools left by
    a stopped process are removed (their requests are gone), tus part files are measured."""
    return Staging(config.staging_bytes_max, _measure(config))


def prepare_shared_staging(config: ApiConfig) -> None:
    """Before the API processes of a data dir start (blocking): removes the spools left by
    stopped ones, measures the tus part files into slot 0 of a fresh shared count (the
    processes' slots at 0). The processes start and stop together (ops/api_processes.py),
    so no spool is live and no process has counted anything yet."""
    used = _measure(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    path = config.data_dir / SLOTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(SLOT.pack(used) + bytes(SLOTS_BYTES - SLOT.size))
    os.replace(tmp, path)


def open_shared_staging(config: ApiConfig, index: int) -> Staging:
    """API process `index`'s share of the count `prepare_shared_staging` made (blocking)."""
    return Staging(
        config.staging_bytes_max, shared=_SharedCount(config.data_dir / SLOTS_FILE, index)
    )


def _measure(config: ApiConfig) -> int:
    incoming = config.data_dir / "incoming"
    for leftover in _files(incoming):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    used = 0
    for part in _files(config.data_dir / "tus"):
        with contextlib.suppress(FileNotFoundError):
            used += part.stat().st_size
    return used


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
