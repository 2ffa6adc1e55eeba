"""The cache node: a byte-bounded LRU in front of the store replicas, with single-flight
misses, a short negative cache, invalidation, and repair reports.

Read path (``lookup`` then ``fetch``):

1. ``lookup`` (synchronous): the LRU; a hit is answered without a Task.
2. ``fetch``: a 404 remembered within ``negative_ttl_s`` answers absent at once; otherwise
   the miss joins the flight for that needle or starts one (``cache.flight``), which reads
   the replicas with ``read_from_replicas`` (verified against the ETag, failing over;
   accepting f4 read tickets, so a migrated volume's bytes come from the f4 storage node
   holding them, not relayed by the name node).
3. The flight's result is cached when it was admitted (any caller sent admit), it fits
   (``item_bytes_max``) and no invalidation arrived while it ran. Replicas found corrupt
   or missing the needle are reported to the directory in the background.

``forget(vid, key)`` (DELETE) drops every cached variant of the key and marks its flights
invalidated so they cannot repopulate the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cache.config import CacheConfig
from cache.flight import Flight, FlightTable
from cache.lru import CachedNeedle, LruStatistics, NeedleKey, NeedleLru
from common.credentials import Credentials, Purpose
from common.leanhttp.client import LeanHTTPClient
from replica.errors import NeedleAbsent, ReplicaReadError
from replica.read import read_from_replicas, report_bad_replicas
from replica.ticket_batches import TicketBatches

__all__ = ["CacheNode", "CacheStatistics"]

log = logging.getLogger("pinhole.cache")

# Repair reports posted at once at most (beyond it a report is dropped and logged: the
# store's scrubber finds the bad copy later), and how long one (needle, replica) report
# suppresses the same report again, with at most REPORTS_REMEMBERED_MAX remembered.
REPORTS_INFLIGHT_MAX: Final = 64
REPORT_REPEAT_S: Final = 60.0
REPORTS_REMEMBERED_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """Counters since start. hits/misses count GETs answered from the LRU / not;
    negative_hits count misses answered by a remembered 404; coalesced counts misses that
    joined a flight instead of reading the store; store_reads counts flights started."""

    node_id: str
    lru: LruStatistics
    hits: int
    misses: int
    negative_hits: int
    coalesced: int
    store_reads: int
    store_reads_absent: int
    store_reads_failed: int
    store_reads_ticketed: int
    ticket_fallbacks: int
    ticket_batches: int
    ticket_batched_reads: int
    fetches_inflight: int
    fetches_refused: int
    not_admitted: int
    invalidations: int
    invalidated_in_flight: int
    bad_replicas_found: int
    repairs_reported: int
    repairs_dropped: int
    negative_entries: int


class CacheNode:
    def __init__(
        self, config: CacheConfig, *, credentials: Credentials, client: LeanHTTPClient
    ) -> None:
        self.config = config
        self._credentials = credentials
        self._read_headers = (("Authorization", credentials.header(Purpose.READ)),)
        self.client = client
        self._ticket_batches = TicketBatches()
        self.lru = NeedleLru(bytes_max=config.cache_bytes_max, item_bytes_max=config.item_bytes_max)
        self._flights: FlightTable[CachedNeedle] = FlightTable(
            inflight_max=config.inflight_fetches_max
        )
        self._negative: OrderedDict[NeedleKey, float] = OrderedDict()  # -> expiry (monotonic)
        self._reported: OrderedDict[tuple[NeedleKey, str], float] = OrderedDict()
        self._report_tasks: set[asyncio.Task[int]] = set()
        self.hits = 0
        self.misses = 0
        self.negative_hits = 0
        self.store_reads_absent = 0
        self.store_reads_failed = 0
        self.store_reads_ticketed = 0
        self.ticket_fallbacks = 0
        self.not_admitted = 0
        self.invalidations = 0
        self.bad_replicas_found = 0
        self.repairs_reported = 0
        self.repairs_dropped = 0

    # ------------------------------------------------------------------ reads

    def lookup(self, k: NeedleKey) -> CachedNeedle | None:
        entry = self.lru.get(k)
        if entry is not None:
            self.hits += 1
        return entry

    async def fetch(self, k: NeedleKey, replicas: Sequence[str], *, admit: bool) -> CachedNeedle:
        """The needle after a miss. Raises NeedleAbsent, ReplicasUnavailable or
        TooManyFetches."""
        self.misses += 1
        expires = self._negative.get(k)
        if expires is not None:
            if time.monotonic() < expires:
                self.negative_hits += 1
                raise NeedleAbsent("needle not found (remembered)", bad=[], failed=[])
            del self._negative[k]
        replicas = tuple(replicas)
        flight = self._flights.join_or_start(k, lambda f: self._read(f, replicas), admit=admit)
        return await flight.wait()

    async def _read(self, flight: Flight[CachedNeedle], replicas: Sequence[str]) -> CachedNeedle:
        k = flight.key
        vid, key, alt, cookie = k
        try:
            read = await read_from_replicas(
                self.client,
                replicas,
                vid,
                key,
                alt,
                cookie,
                headers=self._read_headers,
                timeout_s=self.config.fetch_timeout_s,
                tickets=True,
                batches=self._ticket_batches,
            )
        except ReplicaReadError as exc:
            self._report(k, exc.bad)
            if isinstance(exc, NeedleAbsent):
                self.store_reads_absent += 1
                if exc.certain and not flight.invalidated:
                    self._remember_absent(k)
            else:
                self.store_reads_failed += 1
            raise
        self._report(k, read.bad)
        self.store_reads_ticketed += read.ticketed
        self.ticket_fallbacks += read.ticket_failures
        entry = CachedNeedle(read.data, read.etag)
        if flight.invalidated:
            pass  # counted by the flight table; served to the waiters, never cached
        elif not flight.admit:
            self.not_admitted += 1
        else:
            self.lru.put(k, entry)
        return entry

    def _remember_absent(self, k: NeedleKey) -> None:
        ttl = self.config.negative_ttl_s
        if ttl <= 0:
            return
        negative = self._negative
        negative[k] = time.monotonic() + ttl
        negative.move_to_end(k)
        while len(negative) > self.config.negative_entries_max:
            negative.popitem(last=False)

    # ------------------------------------------------------------------ invalidation

    def forget(self, vid: int, key: int) -> int:
        """Drops every cached variant of (vid, key) and stops its flights from caching;
        the number of cached entries dropped."""
        self.invalidations += 1
        n = self.lru.forget(vid, key)
        self._flights.invalidate(vid, key)
        # Remembered 404s stay: a delete cannot make an absent needle present.
        return n

    # ------------------------------------------------------------------ repair reports

    def _report(self, k: NeedleKey, bad: Sequence[str]) -> None:
        if not bad:
            return
        self.bad_replicas_found += len(bad)
        directory_url = self.config.directory_url
        if not directory_url:
            log.warning("needle %s: bad copies on %s (no directory to report to)", k, bad)
            return
        now = time.monotonic()
        reported = self._reported
        fresh = []
        for replica in bad:
            seen = reported.get((k, replica))
            if seen is not None and now - seen < REPORT_REPEAT_S:
                continue
            reported[(k, replica)] = now
            reported.move_to_end((k, replica))
            fresh.append(replica)
        while len(reported) > REPORTS_REMEMBERED_MAX:
            reported.popitem(last=False)
        if not fresh:
            return
        if len(self._report_tasks) >= REPORTS_INFLIGHT_MAX:
            self.repairs_dropped += len(fresh)
            log.warning("needle %s: repair report for %s dropped (too many in flight)", k, fresh)
            return
        vid, key, alt, _ = k
        task = asyncio.get_running_loop().create_task(
            report_bad_replicas(
                self.client,
                directory_url,
                credentials=self._credentials,
                volume_id=vid,
                key=key,
                alt_key=alt,
                replicas=fresh,
            )
        )
        self._report_tasks.add(task)
        task.add_done_callback(self._report_done)

    def _report_done(self, task: asyncio.Task[int]) -> None:
        self._report_tasks.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.repairs_reported += task.result()

    async def drain_reports(self) -> None:
        """Waits for the repair reports in flight (tests, shutdown)."""
        while self._report_tasks:
            await asyncio.wait(list(self._report_tasks))

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        await self._flights.close()
        if self._report_tasks:
            await asyncio.wait(list(self._report_tasks), timeout=2.0)
        for task in list(self._report_tasks):
            task.cancel()

    def statistics(self) -> CacheStatistics:
        flights = self._flights
        return CacheStatistics(
            node_id=self.config.name,
            lru=self.lru.statistics(),
            hits=self.hits,
            misses=self.misses,
            negative_hits=self.negative_hits,
            coalesced=flights.joins,
            store_reads=flights.started,
            store_reads_absent=self.store_reads_absent,
            store_reads_failed=self.store_reads_failed,
            store_reads_ticketed=self.store_reads_ticketed,
            ticket_fallbacks=self.ticket_fallbacks,
            ticket_batches=self._ticket_batches.batches,
            ticket_batched_reads=self._ticket_batches.batched_reads,
            fetches_inflight=len(flights),
            fetches_refused=flights.refused,
            not_admitted=self.not_admitted,
            invalidations=self.invalidations,
            invalidated_in_flight=flights.invalidated,
            bad_replicas_found=self.bad_replicas_found,
            repairs_reported=self.repairs_reported,
            repairs_dropped=self.repairs_dropped,
            negative_entries=len(self._negative),
        )
