"""`pinhole bench f4`: the f4 warm tier against Haystack and raw PyECLib, in one run, on a
local cluster of real processes (ops/local_cluster.py: a directory, 4 store nodes, a cache,
a router, 4 f4 storage node processes holding the cell's 14 disks, the f4 name node).

One run, in order:
1. writes `blobs` random (incompressible, like photos) blobs through the write path
   (directory.writer.BlobWriter, every replica synced), all asking for the same logical
   volume; the volume that holds the most of them (all, unless a replica failed a write and
   turned the first one read-only) is the one measured, with the blobs in it; then the
   same bytes again under other keys into another volume, the twin, which stays in
   Haystack; both are sealed on each replica and the run waits until the directory lists
   them as not writable;
2. Haystack reads: every blob once through the router (bytes and ETag checked);
3. raw PyECLib: the same plaintext bytes encoded in rows of encoder.ROW_BYTES per data
   block (10 rows per call), in memory, in this process: ECDriver.encode only, with glibc's
   allocator tuned as every pinhole process that encodes has it (f4.erasure.tune_allocator);
4. `pinhole f4 migrate --volume N` (the operator's command, a process of its own) with the
   cluster's f4 config plus the plan's block size: encode, seal, write through the storage
   node processes, reconcile, read back, switch the directory, release Haystack;
5. bytes on disk under <root>/f4/blocks (blocks, sidecars, index copies) plus the key
   store's files, over the plaintext; then the write path alone: as many bytes as the
   cell now holds, written from this process as stripes x 14 blocks of equal length
   through the same storage node processes with the same client (HttpBlockStore writers,
   WINDOW_BYTES per write, block i of every stripe on lane i, each committed: fsync,
   rename), nothing read, sealed, encoded or summed, then deleted;
6. f4 reads: the same blobs through the same router (each once, same bytes and ETag as from
   Haystack); then `read_runs` pairs of timed runs of `read_s` seconds each with
   `read_concurrency` requests in flight (LeanHTTPClient, keep-alive), over the blobs in a
   shuffled cycle: one run of the migrated volume's blobs (from f4) and one of the twin's
   (from Haystack), the order alternating from pair to pair, so whatever else loads the
   machine weighs on both sides alike; then `latency_concurrency` in flight for the idle
   p99 that the rebuild phase compares against;
7. degraded reads: the index (f4.index.load over the cell's storage nodes) says which
   storage node process holds the data blocks of the most blobs; those blobs ("victims")
   are read `degraded_passes` times through the router with `latency_concurrency` in
   flight while healthy, then that process is killed -9 (4 or 3 of every stripe's 14
   blocks unreachable) and they are read again the same way (every one reconstructed by
   the name node from 10 other blocks); bytes read per byte served come from f4's Reader
   in this process over the same storage nodes (the name node does not count bytes read);
8. rebuild: the killed node's disks are emptied and it is started again; `pinhole f4
   rebuild --volume N` runs at the plan's throttle while `latency_concurrency` readers
   read every blob through the router (those on the empty disks reconstructed until
   rebuilt); then verify (f4.rebuild.verify over the storage nodes) must pass.

The f4 read runs go through read tickets (common/read_ticket.py): the cache asks the name
node for a ticket and reads the blob's range from the storage node itself. The name node's
counters over the runs (tickets issued, full reads, in detail.f4_reads.read_path) must show
at least TICKETED_SHARE_MIN of the requests ticketed, or the run stops: the figure would
not measure the read path it names.

Every router answer is checked: 200, the right bytes, and X-Pinhole-Cache "miss" or
"direct", never "hit" (a sealed volume is not admitted to the cache: the router's admit
rule is lv.writable, so both tiers are read through cache -> backend every time); a hit
would void the comparison and stops the run.

Figures (goals from issue 12; the table says ok or MISSED):
    healthy_read_vs_haystack   f4 req/s / Haystack req/s through the router, the same
                               bytes (the twin in Haystack), same client and concurrency:
                               the median of the pairs' ratios, each pair's runs back to
                               back (>= 0.8)
    degraded_p99_vs_healthy    p99 of the victims' reads with their node killed / p99 of
                               the same victims' reads healthy, through the router (<= 3)
    degraded_read_bytes_ratio  bytes read from blocks and sidecars per byte served, for the
                               victims' degraded reads (<= 11)
    effective_replication      bytes on disk after migration (cell + key store) /
                               plaintext (<= 1.45)
    encode_vs_pyeclib          migrate_mb_s / pyeclib_encode_mb_s (>= 0.7)
    rebuild_vs_throttle        rebuild_mb_s / the throttle (<= 1.05: the throttle holds)
    migrate_vs_write_path      migrate_mb_s / write_path_mb_s: how close the migration
                               comes to only writing its output durably (no goal: what
                               bounds it once encoding is cheap)
    encode_vs_pyeclib_ceiling  write_path_mb_s / pyeclib_encode_mb_s: the highest
                               encode_vs_pyeclib any migration could show on this machine,
                               since it must at least write what it stores (no goal: it
                               says whether encode_vs_pyeclib's goal is reachable here)
    write_path_mb_s            plaintext MB / the write path's seconds (step 5)
    migrate_mb_s               plaintext MB / the migration's own seconds (encode, seal,
                               write through the storage nodes, fsync; f4.encoder's stats,
                               reported by the command); the whole command's rate (Python
                               start-up, read-back, switch, release) is in detail
    pyeclib_encode_mb_s        the best of ENCODE_TRIALS passes (each pass in detail)
    rebuild_mb_s               from the rebuild command's report
    read_p99_during_rebuild_vs_idle   router p99 during the rebuild / idle f4 p99, both at
                               latency_concurrency in flight

Beside each read run's req/s: the servers' CPU time per request (router, cache and store
nodes for Haystack; router, cache, name node and storage nodes for f4), since the load
generator in this process takes most of a core on a 2-core machine.

The cluster runs under a temporary directory and is always stopped, even on error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import uvloop
from pyeclib.ec_iface import ECDriver

from bench.peers.cpu import ProcessCpu, cpu_us_per_request
from bench.report import Goals, publish, run_header
from common import credentials, photo
from common.credentials import Credentials, Purpose
from common.leanhttp.client import HttpClientError, LeanHTTPClient
from f4 import index as index_file
from f4.block_store import block_name
from f4.cell_store import cell_block_store
from f4.config import F4Config, f4_config
from f4.encoder import ROW_BYTES, WINDOW_BYTES, stripe_nodes
from f4.erasure import (
    DATA_BLOCKS,
    DEFAULT_EC_TYPE,
    PARITY_BLOCKS,
    STRIPE_BLOCKS,
    tune_allocator,
)
from f4.keystore import KeyStore
from f4.reader import Reader
from f4.rebuild import verify
from ops import local_cluster as lc
from store.client import StoreClient

if TYPE_CHECKING:
    from directory.writer import BlobWriter

HAYSTACK_ROLES: Final = ("router", "cache", "store")
F4_ROLES: Final = ("router", "cache", "f4-name", "f4-node")
GOALS: Final[Goals] = {
    "encode_vs_pyeclib": (">=", 0.7),
    "healthy_read_vs_haystack": (">=", 0.8),
    "degraded_read_bytes_ratio": ("<=", 11.0),
    "degraded_p99_vs_healthy": ("<=", 3.0),
    "effective_replication": ("<=", 1.45),
    "rebuild_vs_throttle": ("<=", 1.05),
}
ENCODE_S_MIN: Final = 0.2  # one pass of the raw encode repeats over the bytes this long
ENCODE_TRIALS: Final = 5
WRITE_CONCURRENCY: Final = 16
SEAL_WAIT_S_MAX: Final = 30.0
COMMAND_S_MAX: Final = 600.0  # a migrate or rebuild command of the full plan
REQUEST_TIMEOUT_S: Final = 10.0
BLOBS_IN_VOLUME_MIN: Final = 0.5  # of the plan's blobs, or the run stops
READER_BLOBS_MAX: Final = 40  # victims read in this process for the bytes figure
STALE_LOOKUP_S_MAX: Final = 60.0  # the router's lookup_ttl_s (5 s) and then some
BENCH_F4_CONFIG: Final = "f4-bench.toml"
# The write path's scratch blocks belong to this volume id, which no volume has.
WRITE_PATH_VOLUME: Final = 999_999_999
# The variant written and read: a published one (the router serves the original only to
# internal readers).
RENDITION: Final = 640
ALT_KEY: Final = photo.alt_key(RENDITION, photo.Format.JPEG)
CACHE_SOURCES_OK: Final = frozenset({"miss", "direct"})
# Healthy f4 reads answered with a read ticket, of all the timed runs' requests, at least.
TICKETED_SHARE_MIN: Final = 0.99


@dataclass(frozen=True, slots=True)
class Plan:
    blobs: int
    blob_bytes_min: int
    blob_bytes_max: int
    block_bytes: int
    read_concurrency: int  # in flight, for the req/s runs
    read_s: float  # one timed run
    read_runs: int  # per side; the median counts
    latency_concurrency: int  # in flight, for the p99 comparisons
    degraded_passes: int  # over the victims, healthy and degraded alike
    rebuild_mb_s: float


QUICK: Final = Plan(
    blobs=100,
    blob_bytes_min=8_000,
    blob_bytes_max=60_000,
    block_bytes=256 << 10,
    read_concurrency=8,
    read_s=1.5,
    read_runs=1,
    latency_concurrency=4,
    degraded_passes=2,
    rebuild_mb_s=2.0,
)
FULL: Final = Plan(
    blobs=1200,
    blob_bytes_min=20_000,
    blob_bytes_max=200_000,
    block_bytes=4 << 20,
    read_concurrency=16,
    read_s=8.0,
    read_runs=3,
    latency_concurrency=4,
    degraded_passes=10,
    rebuild_mb_s=10.0,
)


@dataclass(frozen=True, slots=True)
class Blob:
    key: int
    cookie: int
    data: bytes
    path: str  # the public photo path


@dataclass(slots=True)
class Load:
    """What one closed-loop run through the router saw."""

    latencies_s: list[float] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_s)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(1e3 * seconds, 3)


def _for_s(seconds: float) -> Callable[[int], bool]:
    """A `done` for _drive: true once `seconds` have passed from now."""
    deadline = time.monotonic() + seconds
    return lambda _started: time.monotonic() >= deadline


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _raw_encode_mb_s(blobs: list[Blob]) -> tuple[float, list[float]]:
    """ECDriver.encode of the plaintext in calls of 10 rows of ROW_BYTES each: ENCODE_TRIALS
    passes over the bytes (each at least ENCODE_S_MIN), the best pass's MB/s and every
    pass's. The best, since other processes on a shared 2-core machine only ever slow a
    pass down: the baseline is what the code does when it has a core."""
    # As every pinhole process that encodes runs PyECLib (f4.erasure.Codec tunes glibc's
    # allocator; with the defaults the same encode is about 10x slower here).
    tune_allocator()
    data = b"".join(b.data for b in blobs)
    call_bytes = DATA_BLOCKS * ROW_BYTES
    data += bytes(-len(data) % call_bytes)
    driver = ECDriver(k=DATA_BLOCKS, m=PARITY_BLOCKS, ec_type=DEFAULT_EC_TYPE)
    view = memoryview(data)
    rates: list[float] = []
    for _ in range(ENCODE_TRIALS):
        encoded = 0
        started = time.perf_counter()
        while True:
            for at in range(0, len(data), call_bytes):
                driver.encode(bytes(view[at : at + call_bytes]))
            encoded += len(data)
            elapsed = time.perf_counter() - started
            if elapsed >= ENCODE_S_MIN:
                rates.append(encoded / 1e6 / elapsed)
                break
    return max(rates), rates


class F4Bench:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        # Without the watcher: the benchmark times `pinhole f4 rebuild` itself.
        self.layout = lc.Layout(
            root=work / "cluster", port_base=lc.free_port_base(), stores=4, workers=0,
            f4_watch=False,
        )  # fmt: skip
        self.running: dict[str, lc.Running] = {}
        self.creds = Credentials.from_secret(b"unset: start() loads the cluster's secret")
        self.volume = 0
        self.twin_volume = 0  # the same bytes under other keys, left in Haystack
        self.figures: dict[str, float] = {}
        self.detail: dict[str, Any] = {}

    # -- the cluster -------------------------------------------------------------------------

    def start(self) -> None:
        root = self.layout.root
        root.mkdir(parents=True)
        credentials.ensure_secret_file(root)
        self.creds = self.layout.operator_credentials()
        lc.save_layout(self.layout)
        log(f"starting a local cluster under {root}")
        self.running, _ = lc.start_missing(self.layout)
        asyncio.run(lc.wait_up(self.layout, self.running))
        # The cluster's f4 config with the plan's block size and throttle, for the
        # commands this benchmark runs (the services read their own f4.toml; neither
        # setting changes how they serve).
        (root / BENCH_F4_CONFIG).write_text(
            self.layout.f4_config()
            + f"block_bytes = {self.plan.block_bytes}\n"
            + f"rebuild_mb_s = {self.plan.rebuild_mb_s}\n"
        )

    def stop(self) -> None:
        lc.stop(list(self.running.values()))

    def f4_config(self) -> F4Config:
        doc = tomllib.loads((self.layout.root / BENCH_F4_CONFIG).read_text())
        return f4_config(doc)

    def pids(self, *roles: str) -> list[int]:
        return [e.pid for e in self.running.values() if e.role in roles and lc.alive(e)]

    def f4_command(self, *args: str) -> tuple[dict[str, Any], float]:
        """`pinhole --config <bench f4 config> f4 <args> --json`: its JSON and wall seconds."""
        argv = [
            sys.executable, "-m", "ops.cli",
            "--config", str(self.layout.root / BENCH_F4_CONFIG), "f4", *args, "--json",
        ]  # fmt: skip
        argv = lc.profiled_argv(argv, f"f4-{args[0]}")
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_S_MAX)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"pinhole f4 {args[0]} failed: {proc.stderr[-2000:]}")
        doc: dict[str, Any] = json.loads(proc.stdout)
        return doc, seconds

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> None:
        self.start()
        try:
            blobs, twins = uvloop.run(self.write())
            self.detail["source_replicas"] = uvloop.run(self.seal(self.volume))
            self.detail["twin_replicas"] = uvloop.run(self.seal(self.twin_volume))
            plaintext = sum(len(b.data) for b in blobs)
            etags = uvloop.run(self.read_each("haystack", blobs, {}))
            best, trials = _raw_encode_mb_s(blobs)
            self.figures["pyeclib_encode_mb_s"] = round(best, 1)
            self.detail["pyeclib_encode_trials_mb_s"] = [round(r, 1) for r in trials]
            self.migrate(plaintext)
            self.bytes_on_disk(self.detail["migration"]["plaintext_bytes"])
            self.write_path()
            uvloop.run(self.await_f4(blobs[0]))
            uvloop.run(self.read_each("f4", blobs, etags))
            uvloop.run(self.read_each("haystack twin", twins, {}))
            before = uvloop.run(self.name_status())
            pairs = uvloop.run(self.paired_throughput(twins, blobs))
            self.detail["f4_reads"]["read_path"] = self.read_path(
                before, uvloop.run(self.name_status()), self.detail["f4_reads"]
            )
            self.detail["healthy_read_pairs"] = [round(r, 3) for r in pairs]
            self.figures["healthy_read_vs_haystack"] = round(float(statistics.median(pairs)), 3)
            idle = uvloop.run(self.latency(blobs, passes=1))
            self.detail["f4_idle_latency"] = self._latency_doc(idle)
            host = self.degraded(blobs)
            self.rebuild(blobs, host, idle)
        finally:
            self.stop()

    async def write(self) -> tuple[list[Blob], list[Blob]]:
        from directory.writer import BlobWriter

        plan = self.plan
        rng = random.Random(12)
        sizes = [rng.randint(plan.blob_bytes_min, plan.blob_bytes_max) for _ in range(plan.blobs)]
        datas = [os.urandom(size) for size in sizes]
        base = int(time.time() * 1000) << 23
        log(
            f"writing {plan.blobs} blobs ({sum(sizes) / 1e6:.1f} MB) to one volume, and "
            "the same bytes under other keys to a twin volume"
        )
        async with BlobWriter(self.layout.directory_url, credentials=self.creds) as w:
            self.volume, blobs = await self._write_set(w, base, datas, frozenset())
            self.twin_volume, twins = await self._write_set(
                w, base + plan.blobs, datas, frozenset({self.volume})
            )
        self.detail["written"] = {
            "blobs": plan.blobs,
            "volume": self.volume,
            "in_volume": len(blobs),
            "twin_volume": self.twin_volume,
            "in_twin_volume": len(twins),
        }
        return blobs, twins

    async def _write_set(
        self, w: BlobWriter, base: int, datas: list[bytes], avoid: frozenset[int]
    ) -> tuple[int, list[Blob]]:
        """`datas` as blobs base, base + 1, ... all asking for the volume the first one
        lands in (never one of `avoid`); (that volume, the blobs in it)."""
        first = await w.put(
            base, ALT_KEY, datas[0], cookie=secrets.randbits(64), avoid_volume_ids=avoid
        )
        written: list[tuple[int, int, bytes]] = [(first.volume_id, first.cookie, datas[0])]
        sem = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def one(i: int) -> tuple[int, int, bytes]:
            async with sem:
                r = await w.put(
                    base + i,
                    ALT_KEY,
                    datas[i],
                    cookie=secrets.randbits(64),
                    volume_id=first.volume_id,
                    avoid_volume_ids=avoid,
                )
            return r.volume_id, r.cookie, datas[i]

        written += await asyncio.gather(*(one(i) for i in range(1, len(datas))))
        # A put that a replica fails (a timeout on a loaded machine is enough) turns its
        # volume read-only and lands on another one: the volume holding the most blobs is
        # the one measured, with the blobs in it.
        per_volume = Counter(vid for vid, _, _ in written)
        vid, count = per_volume.most_common(1)[0]
        if count < len(datas) * BLOBS_IN_VOLUME_MIN:
            raise RuntimeError(f"the writes spread over volumes {dict(per_volume)}")
        if count < len(datas):
            log(f"{len(datas) - count} blobs landed outside volume {vid}: left out")
        return vid, [
            Blob(
                base + i,
                cookie,
                data,
                photo.photo_path(vid, base + i, cookie, RENDITION, photo.Format.JPEG),
            )
            for i, (v, cookie, data) in enumerate(written)
            if v == vid
        ]

    async def _lookup(self, http: LeanHTTPClient, vid: int) -> dict[str, Any]:
        r = await http.request(
            "GET",
            f"{self.layout.directory_url}/volumes/{vid}",
            headers=(("Authorization", self.creds.header(Purpose.ADMIN)),),
        )
        if r.status != 200:
            raise RuntimeError(f"directory lookup of volume {vid}: HTTP {r.status}")
        doc: dict[str, Any] = json.loads(r.body)
        return doc

    async def seal(self, vid: int) -> list[str]:
        """Seals volume `vid` on every replica, until the directory lists it as not
        writable; the replicas' node ids."""
        http = LeanHTTPClient()
        try:
            lv = await self._lookup(http, vid)
            replicas = [rep["node_id"] for rep in lv["replicas"]]
            for rep in lv["replicas"]:
                async with StoreClient(rep["url"], credentials=self.creds) as sc:
                    await sc.set_mode(vid, "sealed")
            deadline = time.monotonic() + SEAL_WAIT_S_MAX
            while lv["writable"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"volume {vid} still writable after sealing")
                await asyncio.sleep(0.2)
                lv = await self._lookup(http, vid)
        finally:
            await http.close()
        log(f"volume {vid} sealed on {', '.join(replicas)}")
        return replicas

    # -- reads through the router --------------------------------------------------------------

    async def _get(self, http: LeanHTTPClient, blob: Blob, load: Load) -> str:
        """One GET through the router, checked; its ETag."""
        t0 = time.perf_counter()
        try:
            r = await http.request(
                "GET", self.layout.router_url + blob.path, timeout_s=REQUEST_TIMEOUT_S
            )
        except HttpClientError as e:
            load.failures.append(f"{blob.key}: {e}")
            return ""
        load.latencies_s.append(time.perf_counter() - t0)
        source = r.headers.get("x-pinhole-cache", "")
        load.sources[source] += 1
        if r.status != 200 or r.body != blob.data:
            load.failures.append(f"{blob.key}: HTTP {r.status}, {len(r.body)} bytes")
        elif source not in CACHE_SOURCES_OK:
            raise RuntimeError(
                f"the router answered X-Pinhole-Cache {source!r} for a sealed volume: the "
                "comparison would measure the cache, not the tiers"
            )
        return r.headers.get("etag", "")

    async def _drive(
        self, blobs: list[Blob], concurrency: int, done: Callable[[int], bool]
    ) -> Load:
        """`concurrency` closed-loop readers over `blobs` in order, cycling, until
        done(requests started) is true."""
        load = Load()
        http = LeanHTTPClient(connections_per_origin_max=concurrency)
        started = 0

        async def reader() -> None:
            nonlocal started
            while not done(started):
                blob = blobs[started % len(blobs)]
                started += 1
                await self._get(http, blob, load)

        t0 = time.perf_counter()
        try:
            await asyncio.gather(*(reader() for _ in range(concurrency)))
        finally:
            load.seconds = time.perf_counter() - t0
            await http.close()
        return load

    async def read_each(
        self, tier: str, blobs: list[Blob], etags: dict[int, str]
    ) -> dict[int, str]:
        """Every blob once (which also brings the router's lookup of the volume up to date);
        the same ETags as `etags` when given."""
        load = Load()
        http = LeanHTTPClient()
        got: dict[int, str] = {}
        try:
            for blob in blobs:
                got[blob.key] = await self._get(http, blob, load)
        finally:
            await http.close()
        if load.failures:
            raise RuntimeError(f"{tier} reads failed: {load.failures[:5]}")
        if etags and got != etags:
            changed = [k for k in etags if etags[k] != got.get(k)]
            raise RuntimeError(f"{len(changed)} ETags changed with the move to f4")
        return got

    async def await_f4(self, blob: Blob) -> None:
        """Until the router serves `blob` from f4 after the switch (at once: a router whose
        lookup predates the switch is told volume_not_found by the released replicas and
        looks again). The wait is reported, not hidden."""
        t0 = time.perf_counter()
        http = LeanHTTPClient()
        try:
            while True:
                r = await http.request("GET", self.layout.router_url + blob.path)
                if r.status == 200 and r.body == blob.data:
                    break
                if time.perf_counter() - t0 > STALE_LOOKUP_S_MAX:
                    raise RuntimeError(f"the router still answers {r.status} after the switch")
                await asyncio.sleep(0.05)
        finally:
            await http.close()
        self.detail["migration"]["router_stale_after_switch_s"] = round(time.perf_counter() - t0, 2)

    async def paired_throughput(self, haystack: list[Blob], f4: list[Blob]) -> list[float]:
        """`read_runs` pairs of timed runs, one of `haystack`'s blobs and one of `f4`'s,
        the order alternating from pair to pair; each side's runs summed up in
        detail.haystack_reads and detail.f4_reads; each pair's f4 req/s over its Haystack
        req/s."""
        sides = {"haystack": (haystack, HAYSTACK_ROLES), "f4": (f4, F4_ROLES)}
        runs: dict[str, list[tuple[Load, dict[str, float]]]] = {side: [] for side in sides}
        for i in range(self.plan.read_runs):
            for side in ("haystack", "f4") if i % 2 == 0 else ("f4", "haystack"):
                blobs, roles = sides[side]
                runs[side].append(await self._timed_run(blobs, roles))
        self.detail["haystack_reads"] = self._throughput_doc(runs["haystack"], HAYSTACK_ROLES)
        self.detail["f4_reads"] = self._throughput_doc(runs["f4"], F4_ROLES)
        return [
            (f.requests / f.seconds) / (h.requests / h.seconds)
            for (h, _), (f, _) in zip(runs["haystack"], runs["f4"], strict=True)
        ]

    async def _timed_run(
        self, blobs: list[Blob], roles: tuple[str, ...]
    ) -> tuple[Load, dict[str, float]]:
        """One timed run over `blobs` in a shuffled cycle: the load, and the CPU seconds
        each role's processes spent meanwhile."""
        order = list(blobs)
        random.Random(3).shuffle(order)
        meters = {role: ProcessCpu(self.pids(role)) for role in roles}
        for meter in meters.values():
            meter.start()
        load = await self._drive(order, self.plan.read_concurrency, _for_s(self.plan.read_s))
        spent = {role: meter.stop() for role, meter in meters.items()}
        if load.failures:
            raise RuntimeError(f"reads failed: {load.failures[:5]}")
        return load, spent

    def _throughput_doc(
        self, timed: list[tuple[Load, dict[str, float]]], roles: tuple[str, ...]
    ) -> dict[str, Any]:
        runs = [load for load, _ in timed]
        cpus = [cpu_us_per_request(sum(spent.values()), load.requests) for load, spent in timed]
        by_role = {
            role: [cpu_us_per_request(spent[role], load.requests) for load, spent in timed]
            for role in roles
        }
        rates = [r.requests / r.seconds for r in runs]
        middle = sorted(range(len(runs)), key=lambda i: rates[i])[len(runs) // 2]
        mid = runs[middle]
        doc = {
            "requests_per_s": round(rates[middle]),
            "server_cpu_us_per_request": round(float(statistics.median(cpus)), 1),
            "server_cpu_us_per_request_by_role": {
                role: round(float(statistics.median(v)), 1) for role, v in by_role.items()
            },
            "latency_p50_ms": _ms(_p(mid.latencies_s, 0.5)),
            "latency_p99_ms": _ms(_p(mid.latencies_s, 0.99)),
            "runs": [round(r) for r in rates],
            "in_flight": self.plan.read_concurrency,
            "cache": dict(sum((r.sources for r in runs), Counter())),
        }
        log(f"{doc['requests_per_s']:,} req/s, p99 {doc['latency_p99_ms']} ms, {doc['cache']}")
        return doc

    async def name_status(self) -> dict[str, Any]:
        http = LeanHTTPClient()
        try:
            auth = (("Authorization", self.creds.header(Purpose.ADMIN)),)
            r = await http.request("GET", self.layout.f4_name_url + "/status", headers=auth)
            if r.status != 200:
                raise RuntimeError(f"the f4 name node's /status answered {r.status}")
            doc: dict[str, Any] = json.loads(r.body)
            return doc
        finally:
            await http.close()

    def read_path(
        self, before: dict[str, Any], after: dict[str, Any], reads: dict[str, Any]
    ) -> dict[str, Any]:
        """What the name node did for the timed f4 runs; stops the run when fewer than
        TICKETED_SHARE_MIN of the requests were answered with a ticket."""
        requests = sum(reads["cache"].values())
        delta = {
            k: after[k] - before[k]
            for k in ("reads", "tickets_issued", "healthy_reads", "degraded_reads")
        }
        doc = {"requests": requests, **delta}
        # POST /tickets answered: the tickets of concurrent misses asked for together.
        for k in ("ticket_batches", "ticket_batch_reads"):
            doc[k] = after.get(k, 0) - before.get(k, 0)
        doc["ticketed_share"] = round(delta["tickets_issued"] / max(1, requests), 4)
        log(f"read path: {doc}")
        if doc["ticketed_share"] < TICKETED_SHARE_MIN:
            raise RuntimeError(
                f"only {doc['ticketed_share']:.2%} of the f4 reads were ticketed: {doc}"
            )
        return doc

    async def latency(self, blobs: list[Blob], *, passes: int) -> Load:
        total = passes * len(blobs)
        return await self._drive(blobs, self.plan.latency_concurrency, lambda n: n >= total)

    def _latency_doc(self, load: Load) -> dict[str, Any]:
        return {
            "requests": load.requests,
            "failures": len(load.failures),
            "in_flight": self.plan.latency_concurrency,
            "latency_p50_ms": _ms(_p(load.latencies_s, 0.5)),
            "latency_p99_ms": _ms(_p(load.latencies_s, 0.99)),
            "cache": dict(load.sources),
        }

    # -- migration and bytes on disk -------------------------------------------------------------

    def migrate(self, plaintext: int) -> None:
        source = self.detail["source_replicas"][0]
        log(f"pinhole f4 migrate --volume {self.volume}")
        doc, seconds = self.f4_command(
            "migrate", "--volume", str(self.volume),
            "--haystack-dir", str(self.layout.root / source / "volumes"),
            "--media-data", str(self.layout.root / "media"),
        )  # fmt: skip
        (row,) = doc["volumes"]
        if row.get("outcome") != "migrated" or not row.get("switched"):
            raise RuntimeError(f"the migration did not complete: {row}")
        self.figures["migrate_mb_s"] = round(row["plaintext_bytes"] / 1e6 / row["seconds"], 1)
        self.figures["encode_vs_pyeclib"] = round(
            self.figures["migrate_mb_s"] / self.figures["pyeclib_encode_mb_s"], 4
        )
        self.detail["migration"] = {
            "blobs": row["blobs"],
            "blobs_checked": row["blobs_checked"],
            "stripes": row["stripes"],
            "plaintext_bytes": row["plaintext_bytes"],
            "written_plaintext_bytes": plaintext,
            "seconds": row["seconds"],
            "command_seconds": round(seconds, 3),
            "command_mb_s": round(row["plaintext_bytes"] / 1e6 / seconds, 2),
            "replicas_released": row.get("replicas_released", []),
        }
        log(f"migrated: {self.figures['migrate_mb_s']} MB/s ({seconds:.1f} s for the command)")

    def bytes_on_disk(self, plaintext: int) -> None:
        config = self.f4_config()
        cell = sum(p.stat().st_size for p in config.blocks_dir.rglob("*") if p.is_file())
        keys_path = config.keys_path
        keys = sum(
            p.stat().st_size for p in keys_path.parent.glob(keys_path.name + "*") if p.is_file()
        )
        self.figures["effective_replication"] = round((cell + keys) / plaintext, 4)
        self.detail["bytes_on_disk"] = {"cell": cell, "key_store": keys, "plaintext": plaintext}

    def write_path(self) -> None:
        """Step 5's write path: the migration's bytes written with nothing to compute."""
        config = self.f4_config()
        store = cell_block_store(config, self.creds)
        nodes = store.nodes()
        stripes = int(self.detail["migration"]["stripes"])
        count = stripes * STRIPE_BLOCKS
        block_bytes = self.detail["bytes_on_disk"]["cell"] // count
        window = memoryview(os.urandom(min(WINDOW_BYTES, block_bytes)))

        def lane(b: int) -> list[tuple[str, str]]:
            written = []
            for s in range(stripes):
                node, name = stripe_nodes(nodes, s)[b], block_name(WRITE_PATH_VOLUME, s, b)
                writer = store.open_writer(node, name)
                left = block_bytes
                while left:
                    n = min(left, len(window))
                    writer.write(window[:n])
                    left -= n
                writer.commit()
                written.append((node, name))
            return written

        try:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(STRIPE_BLOCKS) as pool:
                lanes = list(pool.map(lane, range(STRIPE_BLOCKS)))
            seconds = time.perf_counter() - t0
            for node, name in (w for written in lanes for w in written):
                store.delete(node, name)
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        plaintext = self.detail["migration"]["plaintext_bytes"]
        self.figures["write_path_mb_s"] = round(plaintext / 1e6 / seconds, 1)
        self.figures["migrate_vs_write_path"] = round(
            self.figures["migrate_mb_s"] / self.figures["write_path_mb_s"], 3
        )
        self.figures["encode_vs_pyeclib_ceiling"] = round(
            self.figures["write_path_mb_s"] / self.figures["pyeclib_encode_mb_s"], 4
        )
        self.detail["write_path"] = {
            "blocks": count,
            "block_bytes": block_bytes,
            "seconds": round(seconds, 3),
        }
        log(f"write path alone: {self.figures['write_path_mb_s']} MB/s of plaintext")

    # -- a storage node killed -------------------------------------------------------------------

    def degraded(self, blobs: list[Blob]) -> int:
        """Kills the storage node process holding the data blocks of the most blobs; the
        victims' p99 before and after, and the degraded path's bytes. Returns its number."""
        config = self.f4_config()
        store = cell_block_store(config, self.creds)
        keys = KeyStore(config.keys_path)
        try:
            idx = index_file.load(store, self.volume)
            host_of = {d: h for h in range(1, lc.F4_HOSTS + 1) for d in self.layout.f4_disks(h)}
            holder: dict[int, int] = {}
            for (key, _alt), e in idx.entries.items():
                holder[key] = host_of[idx.stripes[e.stripe].nodes[e.block]]
            counts = Counter(holder.values())
            host = max(counts, key=lambda h: counts[h])
            victims = [b for b in blobs if holder.get(b.key) == host]
            passes = self.plan.degraded_passes
            healthy = uvloop.run(self.latency(victims, passes=passes))
            node = self.running[f"f4-node-{host}"]
            log(f"killing f4-node-{host} (pid {node.pid}): {len(victims)} blobs' data blocks")
            os.kill(node.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(node.pid, 0)
            degraded = uvloop.run(self.latency(victims, passes=passes))
            if healthy.failures or degraded.failures:
                raise RuntimeError(f"reads failed: {(healthy.failures + degraded.failures)[:5]}")
            reader = Reader(store, keys)
            for b in victims[:READER_BLOBS_MAX]:
                if reader.read(self.volume, b.key, ALT_KEY, b.cookie) != b.data:
                    raise RuntimeError(f"degraded read of {b.key} wrong")
        finally:
            keys.close()
            close = getattr(store, "close", None)
            if close is not None:
                close()
        counter = reader.counter
        self.figures["degraded_read_bytes_ratio"] = round(
            counter.bytes_read / counter.bytes_served, 3
        )
        self.figures["degraded_p99_vs_healthy"] = round(
            _p(degraded.latencies_s, 0.99) / _p(healthy.latencies_s, 0.99), 3
        )
        self.detail["degraded_reads"] = {
            "killed": f"f4-node-{host}",
            "blobs": len(victims),
            "healthy": self._latency_doc(healthy),
            "degraded": self._latency_doc(degraded),
            "reader_reads": min(len(victims), READER_BLOBS_MAX),
            "reader_degraded_reads": counter.degraded_reads,
            "bytes_read": counter.bytes_read,
            "bytes_served": counter.bytes_served,
        }
        return host

    # -- rebuild -----------------------------------------------------------------------------------

    def rebuild(self, blobs: list[Blob], host: int, idle: Load) -> None:
        for disk in self.layout.f4_disks(host):
            shutil.rmtree(self.f4_config().blocks_dir / disk, ignore_errors=True)
        self.running, started = lc.start_missing(self.layout)
        asyncio.run(lc.wait_healthy([self.running[n] for n in started]))
        log(f"f4-node-{host} back, disks empty; rebuild at {self.plan.rebuild_mb_s} MB/s")

        async def go() -> tuple[dict[str, Any], Load]:
            argv = [
                sys.executable, "-m", "ops.cli",
                "--config", str(self.layout.root / BENCH_F4_CONFIG),
                "f4", "rebuild", "--volume", str(self.volume),
                "--media-data", str(self.layout.root / "media"), "--json",
            ]  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            communicate = asyncio.ensure_future(proc.communicate())
            during = await self._drive(
                blobs, self.plan.latency_concurrency, lambda _n: communicate.done()
            )
            out, err = await asyncio.wait_for(communicate, COMMAND_S_MAX)
            if proc.returncode != 0:
                raise RuntimeError(f"pinhole f4 rebuild failed: {err.decode()[-2000:]}")
            doc: dict[str, Any] = json.loads(out)
            return doc, during

        doc, during = uvloop.run(go())
        (row,) = doc["volumes"]
        if row.get("outcome") != "done":
            raise RuntimeError(f"the rebuild did not complete: {row}")
        config = self.f4_config()
        store = cell_block_store(config, self.creds)
        try:
            after = verify(store, self.volume)
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        self.figures["rebuild_mb_s"] = round(row["mb_per_s"], 2)
        self.figures["rebuild_vs_throttle"] = round(row["mb_per_s"] / self.plan.rebuild_mb_s, 3)
        if during.latencies_s:
            self.figures["read_p99_during_rebuild_vs_idle"] = round(
                _p(during.latencies_s, 0.99) / _p(idle.latencies_s, 0.99), 3
            )
        self.detail["rebuild"] = {
            "throttle_mb_s": self.plan.rebuild_mb_s,
            "blocks_rebuilt": row["blocks_rebuilt"],
            "bytes_written": row["bytes_written"],
            "seconds": row["seconds"],
            "reads_during": self._latency_doc(during),
            "verify_ok_after": after.ok,
        }
        if during.failures:
            raise RuntimeError(f"reads failed during the rebuild: {during.failures[:5]}")


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-f4-", dir=base) as scratch:
        bench = F4Bench(plan, Path(scratch).resolve())
        t0 = time.monotonic()
        bench.run()
        elapsed = time.monotonic() - t0
    doc = {
        **run_header("f4", quick=quick),
        "elapsed_s": round(elapsed, 1),
        "figures": bench.figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "baselines": {
            "encode_vs_pyeclib": (
                f"ECDriver.encode ({DEFAULT_EC_TYPE}) of the same plaintext in memory, 10 rows "
                f"of {ROW_BYTES} bytes per call, the best of {ENCODE_TRIALS} passes; no "
                "reading, sealing, sums, writes or fsync"
            ),
            "healthy_read_vs_haystack": (
                "GET through the same router (cache -> store nodes) of the same bytes under "
                "other keys in a sealed twin volume left in Haystack, same client and "
                "concurrency, in runs alternating with the f4 runs"
            ),
            "degraded_p99_vs_healthy": (
                "the same blobs through the router before their storage node was killed"
            ),
            "migrate_vs_write_path": (
                "the bytes the migration stored, written as blocks through the same storage "
                "nodes and client, committed the same way, with nothing read, sealed, "
                "encoded or summed"
            ),
        },
        "detail": bench.detail,
        "plan": asdict(plan),
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
