"""The scrubber: every volume is verified once per `scrub_interval_s`, throttled, and each
corrupt live needle it finds is reported to the directory for repair.

A pass over one volume is store/volume_checking.verify with `scrub_bytes_per_s_max` on an
admin thread, under a `LocalJob` (common/jobs/local.py) whose cancel stops the pass at its
next needle; one pass runs at a time on a node (background or `POST
/volumes/{id}/scrub`). Each corrupt live (key, alt_key) is sent as `POST
{directory_url}/repairs {volume_id, key, alt_key, node_id, reason: "scrub"}` with the
internal credential; the directory reads a good copy from another replica and writes it
back with a repair PUT (the corrupt needle becomes garbage). Reports that could not be sent
are kept (at most REPORTS_PENDING_MAX) and retried before the next pass. Without a
directory (standalone node) corrupt needles are only logged and counted.

Schedule: each volume's record (`VolumeScrub`: when it was first seen or last attempted,
and its last completed pass: when, bytes read, corrupt live needles found) is kept in
`scrub.json` in the volumes directory, so restarts do not reset it; a pass started by
`POST /volumes/{id}/scrub` counts too. A volume seen for the first time is due one interval
later (a node that starts does not read all its disks at once); the most overdue volume goes
first. `statistics().volumes` carries the records (GET /status, `pinhole scrub status`).

The scrubber sees the node only through `ScrubbedNode`: what it calls, nothing more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol, TypeVar

import aiohttp

from common.credentials import Credentials, Purpose
from common.jobs.local import LocalJob, until_done
from store.config import StoreConfig
from store.storage import Storage, read_file, write_file_atomic
from store.volume import Volume
from store.volume_checking import verify

T = TypeVar("T")

log = logging.getLogger("pinhole.store")

SCHEDULE_NAME: Final = "scrub.json"
# 2: a record per volume; 1 (read, never written): one unix time per volume, which was the
# first-seen time or the last attempt (so it tells no pass apart).
SCHEDULE_FORMAT_VERSION: Final = 2
# Unsent repair reports kept for a retry; beyond, the oldest are dropped (the next pass
# finds the needles again).
REPORTS_PENDING_MAX: Final = 10_000
# The idle loop looks for due (and new) volumes at least this often.
SCRUB_IDLE_CHECK_S_MAX: Final = 60.0
REPORT_TIMEOUT_S: Final = 5.0


class ScrubbedNode(Protocol):
    """What the scrubber uses of its node."""

    @property
    def config(self) -> StoreConfig: ...

    @property
    def credentials(self) -> Credentials | None: ...

    @property
    def node_id(self) -> str: ...

    @property
    def storage(self) -> Storage: ...

    @property
    def volume_ids(self) -> Collection[int]: ...

    def volume(self, vid: int) -> Volume: ...

    async def run_admin(self, fn: Callable[[], T]) -> T: ...


@dataclass(slots=True)
class VolumeScrub:
    """One volume's scrub record (a line of scrub.json)."""

    # The schedule's base: when the volume was first seen, or its last pass was attempted
    # (a failed pass too); the next pass is due one interval later.
    since_unix_s: float
    first_seen_unix_s: float
    # The last pass that completed (None: none yet) and what it found.
    last_pass_unix_s: float | None = None
    last_pass_bytes: int = 0
    last_pass_corrupt: int = 0
    passes: int = 0


@dataclass(frozen=True, slots=True)
class VolumeScrubStatistics:
    volume_id: int
    first_seen_unix_s: float | None  # None: the scrubber has not met the volume yet
    last_pass_unix_s: float | None
    bytes_scrubbed: int  # by the last pass
    corrupt_found: int  # corrupt live needles the last pass found (each reported for repair)
    passes: int
    next_due_unix_s: float | None  # None: scrubbing is off (scrub_interval_s = 0)


@dataclass(frozen=True, slots=True)
class ScrubStatistics:
    passes: int
    bytes_scrubbed: int
    corrupt_found: int
    reports_sent: int
    reports_failed: int
    reports_pending: int
    last_pass_unix_s: float | None
    interval_s: float
    volumes: tuple[VolumeScrubStatistics, ...]


class Scrubber:
    def __init__(self, node: ScrubbedNode) -> None:
        self._node = node
        self._lock = asyncio.Lock()
        self._pending: dict[tuple[int, int, int], None] = {}
        self._session: aiohttp.ClientSession | None = None
        self._volumes: dict[int, VolumeScrub] = {}
        # The background loop's pass in progress (cancelled when the node closes).
        self._pass: LocalJob | None = None
        self.passes = 0
        self.bytes_scrubbed = 0
        self.corrupt_found = 0
        self.reports_sent = 0
        self.reports_failed = 0
        self.last_pass_unix_s: float | None = None

    # -- one pass ------------------------------------------------------------------------------

    async def scrub(
        self,
        vid: int,
        *,
        job: LocalJob,
        bytes_per_s_max: float | None = None,
    ) -> dict[str, Any]:
        """Verifies volume `vid` at `bytes_per_s_max` (default: the node's
        scrub_bytes_per_s_max) under `job` (its progress and its cancel) and reports its
        corrupt live needles. Returns the verify report with `reports_sent`."""
        node = self._node
        throttle = job.throttle(bytes_per_s_max or node.config.scrub_bytes_per_s_max)
        async with self._lock:
            await self.send_pending()
            vol = node.volume(vid)
            report = await until_done(
                node.run_admin(lambda: verify(vol, progress=job.set_progress, throttle=throttle))
            )
            self.passes += 1
            self.bytes_scrubbed += report.bytes_checked
            self.corrupt_found += report.corrupt_live
            now = self.last_pass_unix_s = time.time()
            record = self._volumes.setdefault(vid, VolumeScrub(now, now))
            record.since_unix_s = record.last_pass_unix_s = now
            record.last_pass_bytes = report.bytes_checked
            record.last_pass_corrupt = report.corrupt_live
            record.passes += 1
            await self._save()
            if report.corrupt_live:
                log.error(
                    "v%d: scrub found %d corrupt live needles (%d listed)",
                    vid,
                    report.corrupt_live,
                    len(report.corrupt_needles),
                )
            for key, alt in report.corrupt_needles:
                self._queue(vid, key, alt)
            sent_before = self.reports_sent
            await self.send_pending()
        result = asdict(report)
        result["reports_sent"] = self.reports_sent - sent_before
        return result

    def _queue(self, vid: int, key: int, alt: int) -> None:
        if not self._node.config.directory_url:
            return
        self._pending[(vid, key, alt)] = None
        while len(self._pending) > REPORTS_PENDING_MAX:
            del self._pending[next(iter(self._pending))]

    async def send_pending(self) -> None:
        """Sends the queued repair reports; those that fail stay queued."""
        url = self._node.config.directory_url
        creds = self._node.credentials
        if not url or not self._pending:
            return
        if creds is None or not creds.holds(Purpose.NODE):
            log.error("cannot report corrupt needles: this node holds no node credential")
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REPORT_TIMEOUT_S)
            )
        headers = {"Authorization": creds.header(Purpose.NODE)}
        for vid, key, alt in list(self._pending):
            body = {
                "volume_id": vid,
                "key": key,
                "alt_key": alt,
                "node_id": self._node.node_id,
                "reason": "scrub",
            }
            try:
                async with self._session.post(
                    url.rstrip("/") + "/repairs", json=body, headers=headers
                ) as resp:
                    if resp.status >= 300:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, (), status=resp.status, message=resp.reason or ""
                        )
            except (aiohttp.ClientError, TimeoutError) as e:
                self.reports_failed += 1
                log.warning("repair report for v%d/%d/%d not sent: %s", vid, key, alt, e)
                return  # the directory is away: keep the rest for the next attempt
            del self._pending[(vid, key, alt)]
            self.reports_sent += 1

    # -- the background loop --------------------------------------------------------------------

    async def open(self) -> None:
        """Loads the schedule (scrub.json); the node calls it at start."""
        await self._node.run_admin(self._load_schedule)

    async def run_forever(self, interval_s: float) -> None:
        """Scrubs each volume once per `interval_s`, the most overdue first."""
        node = self._node
        while True:
            now = time.time()
            vids = set(node.volume_ids)
            for vid in vids - set(self._volumes):
                # First seen: due one interval from now.
                self._volumes[vid] = VolumeScrub(now, now)
            for vid in set(self._volumes) - vids:
                del self._volumes[vid]
            due = min(self._volumes, key=lambda v: self._volumes[v].since_unix_s, default=None)
            wait_s = (
                interval_s if due is None else self._volumes[due].since_unix_s + interval_s - now
            )
            if wait_s > 0:
                await self.send_pending()
                await asyncio.sleep(min(wait_s, SCRUB_IDLE_CHECK_S_MAX))
                continue
            assert due is not None
            self._pass = LocalJob("scrub", due)
            try:
                await self.scrub(due, job=self._pass)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a volume deleted meanwhile, an I/O error: next one
                log.warning("v%d: scrub pass failed: %s", due, e)
            finally:
                self._pass = None
            record = self._volumes.get(due)
            if record is not None and record.since_unix_s < now:  # the pass failed
                record.since_unix_s = time.time()
                await self._save()

    async def _save(self) -> None:
        try:
            await self._node.run_admin(self._save_schedule)
        except OSError as e:
            log.warning("cannot save the scrub schedule: %s", e)

    def _load_schedule(self) -> None:
        storage = self._node.storage
        if not storage.exists(SCHEDULE_NAME):
            return
        try:
            doc = json.loads(read_file(storage, SCHEDULE_NAME))
            version = doc.get("version")
            if version == 1:
                # The time was the first sighting or the last attempt: a base, not a pass.
                self._volumes = {
                    int(k): VolumeScrub(float(v), float(v)) for k, v in doc["volumes"].items()
                }
                return
            if version != SCHEDULE_FORMAT_VERSION:
                raise ValueError(f"version {version}")
            self._volumes = {
                int(k): VolumeScrub(
                    since_unix_s=float(v["since_unix_s"]),
                    first_seen_unix_s=float(v["first_seen_unix_s"]),
                    last_pass_unix_s=(
                        None if v["last_pass_unix_s"] is None else float(v["last_pass_unix_s"])
                    ),
                    last_pass_bytes=int(v["last_pass_bytes"]),
                    last_pass_corrupt=int(v["last_pass_corrupt"]),
                    passes=int(v["passes"]),
                )
                for k, v in doc["volumes"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring a bad %s (%s): every volume is due later", SCHEDULE_NAME, e)

    def _save_schedule(self) -> None:
        doc = {
            "version": SCHEDULE_FORMAT_VERSION,
            "volumes": {str(k): asdict(v) for k, v in sorted(self._volumes.items())},
        }
        write_file_atomic(self._node.storage, SCHEDULE_NAME, [json.dumps(doc).encode()])

    def stop(self) -> None:
        """Cancels the background pass in progress: it stops at its next needle."""
        if self._pass is not None:
            self._pass.cancel()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def statistics(self) -> ScrubStatistics:
        interval_s = self._node.config.scrub_interval_s
        volumes = []
        for vid in sorted(self._node.volume_ids):
            # A volume the loop has not met yet (created a moment ago): no record, no date.
            record = self._volumes.get(vid)
            due = None
            if record is not None and interval_s > 0:
                due = record.since_unix_s + interval_s
            volumes.append(
                VolumeScrubStatistics(
                    volume_id=vid,
                    first_seen_unix_s=record.first_seen_unix_s if record else None,
                    last_pass_unix_s=record.last_pass_unix_s if record else None,
                    bytes_scrubbed=record.last_pass_bytes if record else 0,
                    corrupt_found=record.last_pass_corrupt if record else 0,
                    passes=record.passes if record else 0,
                    next_due_unix_s=due,
                )
            )
        return ScrubStatistics(
            passes=self.passes,
            bytes_scrubbed=self.bytes_scrubbed,
            corrupt_found=self.corrupt_found,
            reports_sent=self.reports_sent,
            reports_failed=self.reports_failed,
            reports_pending=len(self._pending),
            last_pass_unix_s=self.last_pass_unix_s,
            interval_s=interval_s,
            volumes=tuple(volumes),
        )
