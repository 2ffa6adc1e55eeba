"""What the router asks the directory: where a logical volume's replicas are, and which
cache nodes are alive.

Volume lookups (`GET /volumes/{vid}`, read credential) are cached for lookup_ttl_s. One
fetch per volume is in flight at a time (single-flight): the requests that need it wait for
that one fetch. An expired entry keeps serving while its refresh runs in the background
(stale-while-revalidate) and, while the directory cannot be reached, for at most
lookup_stale_s_max; so the directory's latency and outages reach the photo path only for a
volume the router has never seen. `refresh` forces a fetch: the handler calls it when the
cached replicas failed, so a moved volume is found at once.

Unknown volumes cost neither the directory nor real photos (a URL can name any volume id):
- an id the directory said does not exist is remembered for unknown_volume_ttl_s in a table
  of its own, bounded by unknown_volumes_cached_max with O(1) eviction (oldest first);
- every lookup answer carries the directory's highest volume id (ids are handed out in
  increasing order). An id above it is looked up by one shared probe at a time, at most one
  per lookup_probe_s_min, and answered absent when the probe's answer still puts it above:
  a flood of made-up ids costs at most 1 / lookup_probe_s_min directory requests a second
  and no memory per id, while a volume created a moment ago is found by the next probe.

The cache node list (`GET /caches`) is refreshed every caches_refresh_s by a background
task into a CacheRing; a failed refresh keeps the previous list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from common import ids
from common.credentials import Credentials, Purpose
from common.leanhttp.client import HttpClientError, LeanHTTPClient
from common.photo import VOLUME_ID_MAX
from router.config import RouterConfig
from router.errors import DirectoryUnavailable
from router.ring import CacheNode, CacheRing

log = logging.getLogger("pinhole.router")

# After a failed background refresh, the next one waits at least this long.
_REFRESH_RETRY_S: Final = 1.0
# The directory's highest volume id, on every lookup answer (directory/http_api.py).
VOLUME_ID_MAX_HEADER: Final = "x-pinhole-volume-id-max"


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    node_id: str
    url: str
    alive: bool
    ready: bool


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    """A logical volume as the router uses it.

    readable: the urls of ready replicas, alive ones first (the directory's order).
    rotations[i]: `readable` with its alive part rotated by i, so keys spread their reads
    over the alive replicas (key % alive replicas picks the rotation) while one key always
    prefers the same replica (its page cache). replicas_header[i]: rotations[i] as the
    X-Pinhole-Replicas value. cache_headers[i][admit]: the request header fields for a
    cache node (the read credential, replicas, admission) built once, so the photo path
    does not build them per request and the HTTP client encodes each tuple once (it
    memoizes per tuple).
    """

    volume_id: int
    writable: bool
    replicas: tuple[ReplicaInfo, ...]
    readable: tuple[str, ...]
    rotations: tuple[tuple[str, ...], ...]
    replicas_header: tuple[str, ...]
    cache_headers: tuple[tuple[tuple[tuple[str, str], ...], ...], ...] = ()

    @classmethod
    def from_json(cls, doc: Any, *, auth: tuple[tuple[str, str], ...] = ()) -> VolumeInfo:
        """From the directory's lv JSON; ValueError when it is not that shape. `auth`: the
        header fields that carry the read credential to cache nodes."""
        try:
            vid = doc["volume_id"]
            writable = doc["writable"]
            raw = doc["replicas"]
            if not isinstance(vid, int) or not isinstance(writable, bool):
                raise TypeError
            replicas = tuple(
                ReplicaInfo(
                    str(r["node_id"]),
                    str(r["url"]).rstrip("/"),
                    bool(r.get("alive", True)),
                    r.get("state", "ready") == "ready",
                )
                for r in raw
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a logical volume: {str(doc)[:200]}") from e
        # A replica still copying has no complete data; one without a url (its node is
        # unknown to the directory) cannot be asked.
        alive = [r.url for r in replicas if r.ready and r.url and r.alive]
        dead = [r.url for r in replicas if r.ready and r.url and not r.alive]
        readable = (*alive, *dead)
        rotations = tuple((*alive[i:], *alive[:i], *dead) for i in range(len(alive))) or (readable,)
        headers = tuple(",".join(r) for r in rotations)
        return cls(
            vid,
            writable,
            replicas,
            readable,
            rotations,
            headers,
            tuple(
                tuple(
                    (*auth, ("X-Pinhole-Replicas", h), ("X-Pinhole-Admit", a)) for a in ("0", "1")
                )
                for h in headers
            ),
        )

    def rotation(self, key: int) -> int:
        return key % len(self.rotations)

    def node_id_of(self, url: str) -> str | None:
        url = url.rstrip("/")
        return next((r.node_id for r in self.replicas if r.url == url), None)


@dataclass(slots=True)
class _Entry:
    info: VolumeInfo | None  # None: the directory says there is no such volume
    fresh_until: float
    stale_until: float


@dataclass(frozen=True, slots=True)
class LookupStatistics:
    volumes_cached: int
    unknown_volumes_cached: int
    lookups: int
    lookup_fetches: int
    lookup_failures: int
    stale_served: int
    unknown_answered: int
    probes: int
    caches: int
    cache_refresh_failures: int


class Directory:
    """The router's view of the directory: cached volume lookups and the cache ring."""

    def __init__(
        self,
        config: RouterConfig,
        client: LeanHTTPClient,
        *,
        credentials: Credentials,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._client = client
        self._base = config.directory_url.rstrip("/")
        self._headers = (("Authorization", credentials.header(Purpose.READ)),)
        self._clock = clock
        # Known volumes; the dict's order is the order they were fetched in (evict oldest).
        self._entries: dict[int, _Entry] = {}
        # Volumes the directory said do not exist -> until when that is believed.
        self._absent: OrderedDict[int, float] = OrderedDict()
        # The directory's highest volume id as last seen (-1: never), and the probe for ids
        # above it (at most one in flight, one per lookup_probe_s_min).
        self._id_max = -1
        self._probe: asyncio.Future[None] | None = None
        self._probe_after = -math.inf
        self._unknown_answered = 0
        self._probes = 0
        self._inflight: dict[int, asyncio.Future[VolumeInfo | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ring = CacheRing()
        self._refresher: asyncio.Task[None] | None = None
        self._lookups = 0
        self._fetches = 0
        self._failures = 0
        self._stale_served = 0
        self._cache_refresh_failures = 0

    # -- volumes --------------------------------------------------------------------------

    async def volume(self, vid: int) -> VolumeInfo | None:
        """The volume (None: unknown to the directory). Raises DirectoryUnavailable."""
        self._lookups += 1
        now = self._clock()
        entry = self._entries.get(vid)
        if entry is not None:
            if now < entry.fresh_until:
                return entry.info
            if entry.info is not None and now < entry.stale_until:
                self._refresh_in_background(vid)
                self._stale_served += 1
                return entry.info
        absent_until = self._absent.get(vid)
        if absent_until is not None:
            if now < absent_until:
                self._unknown_answered += 1
                return None
            del self._absent[vid]
        if entry is None and 0 <= self._id_max < vid:
            await self._probe_above(vid)
            if vid > self._id_max:
                self._unknown_answered += 1
                return None
            entry = self._entries.get(vid)
            if entry is not None and self._clock() < entry.fresh_until:
                return entry.info
        return await self._fetch_once(vid)

    async def _probe_above(self, vid: int) -> None:
        """Looks `vid` up as the one shared probe for ids above the known highest (joins
        the one in flight), which updates the highest id. Raises DirectoryUnavailable."""
        probe = self._probe
        if probe is None:
            probe = asyncio.ensure_future(self._run_probe(vid))
            self._probe = probe
            probe.add_done_callback(self._probe_done)
        await asyncio.shield(probe)

    async def _run_probe(self, vid: int) -> None:
        wait_s = self._probe_after - self._clock()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        self._probes += 1
        try:
            await self._fetch_once(vid)
        finally:
            self._probe_after = self._clock() + self._config.lookup_probe_s_min

    def _probe_done(self, fut: asyncio.Future[None]) -> None:
        if self._probe is fut:
            self._probe = None
        if not fut.cancelled():
            fut.exception()  # retrieved: every waiter may have given up (shield)

    def volume_now(self, vid: int) -> VolumeInfo | None:
        """The volume when the cache can answer at once (fresh, or stale while a refresh
        runs: exactly what `volume` would return without waiting); None when the caller
        must await `volume` (not cached, expired, or a remembered unknown volume). Lets
        the photo path skip a coroutine per request."""
        entry = self._entries.get(vid)
        if entry is None or entry.info is None:
            return None
        now = self._clock()
        if now < entry.fresh_until:
            self._lookups += 1
            return entry.info
        if now < entry.stale_until:
            self._lookups += 1
            self._refresh_in_background(vid)
            self._stale_served += 1
            return entry.info
        return None

    async def refresh(self, vid: int) -> VolumeInfo | None:
        """A fresh lookup now (joins one in flight). Raises DirectoryUnavailable only when
        nothing usable is cached."""
        try:
            return await self._fetch_once(vid)
        except DirectoryUnavailable:
            entry = self._entries.get(vid)
            if entry is not None and entry.info is not None:
                return entry.info
            raise

    def _refresh_in_background(self, vid: int) -> None:
        if vid in self._inflight:
            return
        task = asyncio.ensure_future(self._fetch_once(vid))
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # logged where it happened; retrieved so asyncio stays quiet

    async def _fetch_once(self, vid: int) -> VolumeInfo | None:
        fut = self._inflight.get(vid)
        if fut is None:
            fut = asyncio.ensure_future(self._fetch(vid))
            self._inflight[vid] = fut
            fut.add_done_callback(lambda f: self._fetch_done(vid, f))
        # shield: a caller that gives up must not cancel the fetch the others wait on.
        return await asyncio.shield(fut)

    def _fetch_done(self, vid: int, fut: asyncio.Future[VolumeInfo | None]) -> None:
        if self._inflight.get(vid) is fut:
            del self._inflight[vid]
        if not fut.cancelled():
            fut.exception()  # retrieved: every waiter may have given up (shield)

    async def _fetch(self, vid: int) -> VolumeInfo | None:
        cfg = self._config
        self._fetches += 1
        try:
            resp = await self._client.request(
                "GET",
                f"{self._base}/volumes/{vid}",
                headers=self._headers,
                timeout_s=cfg.directory_timeout_s,
            )
            id_max = resp.headers.get(VOLUME_ID_MAX_HEADER)
            if id_max is not None:
                with contextlib.suppress(ValueError):
                    self._id_max = ids.parse_decimal(id_max, maximum=VOLUME_ID_MAX)
            if resp.status == 404:
                info = None
            elif resp.status == 200:
                info = VolumeInfo.from_json(json.loads(resp.body), auth=self._headers)
            else:
                raise ValueError(f"HTTP {resp.status}: {resp.body[:200]!r}")
        except (HttpClientError, ValueError) as e:
            self._failures += 1
            log.warning("directory lookup of volume %d failed: %s", vid, e)
            entry = self._entries.get(vid)
            if entry is not None:  # retry later, not on every request
                entry.fresh_until = max(entry.fresh_until, self._clock() + _REFRESH_RETRY_S)
            raise DirectoryUnavailable(f"the directory did not answer for volume {vid}") from e
        now = self._clock()
        if info is None:
            self._forget_known(vid)
            if vid <= self._id_max or self._id_max < 0:
                # Above the highest id the probe answers for it: nothing to remember.
                self._remember_absent(vid, now + cfg.unknown_volume_ttl_s)
        else:
            self._absent.pop(vid, None)
            ttl = cfg.lookup_ttl_s
            self._remember(vid, _Entry(info, now + ttl, now + ttl + cfg.lookup_stale_s_max))
        return info

    def _remember(self, vid: int, entry: _Entry) -> None:
        """Caches a known volume; beyond lookups_cached_max the oldest goes (O(1))."""
        entries = self._entries
        entries.pop(vid, None)  # re-inserted last: the dict's order is the age order
        while len(entries) >= self._config.lookups_cached_max:
            del entries[next(iter(entries))]
        entries[vid] = entry

    def _forget_known(self, vid: int) -> None:
        self._entries.pop(vid, None)

    def _remember_absent(self, vid: int, until: float) -> None:
        """Remembers an unknown volume; beyond unknown_volumes_cached_max the oldest goes."""
        absent = self._absent
        absent[vid] = until
        absent.move_to_end(vid)
        while len(absent) > self._config.unknown_volumes_cached_max:
            absent.popitem(last=False)

    # -- caches ---------------------------------------------------------------------------

    async def refresh_caches(self) -> None:
        """Fetch /caches once into the ring; a failure keeps the previous list."""
        try:
            resp = await self._client.request(
                "GET",
                f"{self._base}/caches",
                headers=self._headers,
                timeout_s=self._config.directory_timeout_s,
            )
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            doc = json.loads(resp.body)
            nodes = [CacheNode(str(c["node_id"]), str(c["url"]).rstrip("/")) for c in doc["caches"]]
        except (HttpClientError, ValueError, KeyError, TypeError) as e:
            self._cache_refresh_failures += 1
            log.warning("cannot refresh the cache list from the directory: %s", e)
            return
        if sorted(nodes, key=lambda n: n.node_id) != list(self.ring.nodes):
            log.info("cache nodes: %s", ", ".join(n.node_id for n in nodes) or "none")
        self.ring.set_nodes(nodes)

    async def start(self) -> None:
        """First cache list now, then every caches_refresh_s in the background."""
        await self.refresh_caches()
        self._refresher = asyncio.create_task(self._refresh_caches_forever())

    async def _refresh_caches_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.caches_refresh_s)
            await self.refresh_caches()

    async def close(self) -> None:
        tasks = [t for t in (self._refresher, self._probe, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._refresher = None

    def statistics(self) -> LookupStatistics:
        return LookupStatistics(
            volumes_cached=len(self._entries),
            unknown_volumes_cached=len(self._absent),
            lookups=self._lookups,
            lookup_fetches=self._fetches,
            lookup_failures=self._failures,
            stale_served=self._stale_served,
            unknown_answered=self._unknown_answered,
            probes=self._probes,
            caches=len(self.ring.nodes),
            cache_refresh_failures=self._cache_refresh_failures,
        )
