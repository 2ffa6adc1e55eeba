"""`pinhole bench cluster`: the cluster's read and write paths against a store node alone,
measured in one run on a local cluster of real processes (ops/local_cluster.py).

Figures (ratios against a baseline measured in the same run):
    router_hit_vs_store   GET/s through the router with a cache hit (router -> cache) over
                          GET/s straight from one store node, same objects, same wrk load
    put_3x_vs_1x          replicated PUT/s (BlobWriter: every replica of a logical volume,
                          acknowledged when all synced) over single-replica PUT/s (the same
                          client machinery writing to one store node), same concurrency,
                          size and duration
    put_cpu_3x_vs_1x      CPU per replicated put over CPU per single-replica put, the bench
                          process (the client) and the store nodes summed: what a replica
                          costs beyond the first (3 replicas at no shared cost would be 3)
    failover_p99_ms       p99 latency of GETs through the router (not admitted to the cache,
                          so every one reaches a store) while one store node is killed -9
                          a third of the way into the run; failover_errors must be 0

Each wrk figure comes with the servers' own CPU time per request (router + cache vs the
store node), since wrk takes most of a core on a 2-core machine.

The PUT figure: both sides run in this process on the same machinery, so the ratio measures
replication and not HTTP clients. The 1x side does per put exactly what BlobWriter does per
replica (xxh3_64 of the body for X-Pinhole-Checksum, the internal credential, a PUT over
LeanHTTPClient, a 201 whose ETag is read); the 3x side is BlobWriter.put itself, volume
choice and all. Each side runs put_slices slices of duration_s (4 s per side with --quick:
with 2 the CPU ratio of one run moved between 2.7 and 4.5), the sides alternating slice by
slice so that whatever else loads the machine weighs on both alike; each slice starts with a
short untimed warm-up (connections, the writable list) and keeps `put_phase_concurrency`
puts in flight; a side's rate is the median of its slices. Both also report CPU per put, the
bench process's (the client) and the store nodes', which is far less sensitive than PUT/s to
whatever else the machine is running.

Why 64 in flight (not 16): a store node's group commit makes durable, with one fdatasync,
whatever is queued, so PUT/s grows with the number of writes in flight until the node runs
out of CPU. At 16 in flight the single node is bound by fdatasync latency (about 16 / sync
time, well below what its CPU allows), so the baseline would be a latency figure and the
ratio would compare two latency-bound rates (which flatters it: 0.40-0.44 at 16 against
0.33-0.45 at 64 in our runs). At 64 a single node is at its throughput plateau (measured
here: about 1,600/s at 16, 2,900-3,500/s at 64 and at 128), so both sides run at the
capacity this machine gives them and the ratio is what replication costs in write
capacity. 64 is also the wrk connection count of the GET figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop
import xxhash

from bench.peers.cpu import ProcessCpu, cpu_us_per_request
from bench.peers.debian import PeerUnavailableError, ensure_debian_packages
from bench.peers.wrk import WrkResult, run_wrk
from bench.report import publish, run_header
from common import credentials, photo
from common.credentials import Credentials, Purpose
from common.leanhttp.client import LeanHTTPClient
from ops import local_cluster as lc
from store.client import StoreClient, needle_path

KiB: Final = 1024
GOALS: Final = {
    "router_hit_vs_store": (">=", 0.7),
    "put_3x_vs_1x": (">=", 0.5),
    "put_cpu_3x_vs_1x": ("<=", 3.3),
    "failover_p99_ms": ("<", 100.0),
}


@dataclass(frozen=True)
class Plan:
    mode: str
    objects: int
    object_bytes: int
    duration_s: float
    runs: int
    put_concurrency: int = 16
    put_phase_concurrency: int = 64  # puts(): both sides (see the module docstring)
    get_connections: int = 64
    failover_concurrency: int = 16
    put_slices: int = 4  # puts(): slices per side, the sides alternating


# The longest the warm-up waits for every photo to be admitted to the cache (a few of the
# router's lookup_ttl_s: a volume's writability reaches the router within one).
WARM_S: Final = 30.0

QUICK = Plan("quick", 2_000, 20 * KiB, 1.0, 1)
FULL = Plan("full", 10_000, 20 * KiB, 10.0, 3, put_slices=6)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# The variant the benchmark writes and reads: a published one (the router serves the
# original, rendition 0, to internal readers only).
RENDITION: Final = 640
ALT_KEY: Final = photo.alt_key(RENDITION, photo.Format.JPEG)


@dataclass(frozen=True)
class Blob:
    volume_id: int
    key: int
    cookie: int
    replicas: tuple[str, ...]

    @property
    def photo_path(self) -> str:
        return photo.photo_path(self.volume_id, self.key, self.cookie, RENDITION, photo.Format.JPEG)

    @property
    def needle_path(self) -> str:
        return needle_path(self.volume_id, self.key, ALT_KEY, self.cookie)


class ClusterBench:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.figures: dict[str, Any] = {}
        self.detail: dict[str, Any] = {}
        self.layout = lc.Layout(
            root=work / "cluster", port_base=lc.free_port_base(), stores=4, workers=0
        )
        self.running: dict[str, lc.Running] = {}
        self.creds = Credentials.from_secret(b"unset: start() loads the cluster's secret")

    # -- the cluster -----------------------------------------------------------------------

    def start(self) -> None:
        self.layout.root.mkdir(parents=True)
        credentials.ensure_secret_file(self.layout.root)
        secret = credentials.load_secret(secret_file=self.layout.secret_file, default_dir=None)
        self.creds = Credentials.from_secret(secret)
        lc.save_layout(self.layout)
        self.running, _ = lc.start_missing(self.layout)
        asyncio.run(lc.wait_up(self.layout, self.running))

    def stop(self) -> None:
        lc.stop(list(self.running.values()))

    def pids(self, *roles: str) -> list[int]:
        return [e.pid for e in self.running.values() if e.role in roles and lc.alive(e)]

    # -- phases ----------------------------------------------------------------------------

    def run(self) -> None:
        avail = ensure_debian_packages({"wrk": "wrk"})
        if not avail["wrk"].ok:
            raise PeerUnavailableError(f"wrk is needed: {avail['wrk'].reason}")
        self.start()
        try:
            blobs = uvloop.run(self.load())
            self.router_hit(blobs)
            uvloop.run(self.puts())
            uvloop.run(self.failover(blobs))
        finally:
            self.stop()

    async def load(self) -> list[Blob]:
        from directory.writer import BlobWriter

        plan = self.plan
        log(f"writing {plan.objects:,} objects of {plan.object_bytes // KiB} KiB, 3 replicas")
        payload = os.urandom(plan.object_bytes)
        base = int(time.time() * 1000) << 23
        blobs: list[Blob] = []
        async with BlobWriter(self.layout.directory_url, credentials=self.creds) as w:
            sem = asyncio.Semaphore(plan.put_concurrency)

            async def one(i: int) -> None:
                async with sem:
                    ref = await w.put(
                        base + i,
                        ALT_KEY,
                        payload,
                        cookie=secrets.randbits(64),
                    )
                    blobs.append(Blob(ref.volume_id, ref.key, ref.cookie, ()))

            await asyncio.gather(*(one(i) for i in range(plan.objects)))
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.layout.directory_url + "/volumes", headers=self._admin()) as r,
        ):
            lvs = {v["volume_id"]: v for v in (await r.json())["volumes"]}
        return [
            Blob(
                b.volume_id,
                b.key,
                b.cookie,
                tuple(rep["url"] for rep in lvs[b.volume_id]["replicas"]),
            )
            for b in blobs
        ]

    def _admin(self) -> dict[str, str]:
        return {"Authorization": self.creds.header(Purpose.ADMIN)}

    def wrk_run(self, label: str, base_url: str, paths: list[str], pids: list[int]) -> float:
        rates, cpus, p99s = [], [], []
        paths_file = self.work / f"{label}.paths"
        paths_file.write_text("\n".join(paths) + "\n")
        for i in range(self.plan.runs):
            cpu = ProcessCpu(pids)
            cpu.start()
            result: WrkResult = run_wrk(
                base_url,
                paths=paths_file,
                # The read credential: stores take no read without it (the router's
                # requests carry nothing and need nothing).
                headers={"Authorization": self.creds.header(Purpose.READ)},
                connections=self.plan.get_connections,
                duration_s=self.plan.duration_s,
                seed=i + 1,
            )
            spent = cpu.stop()
            if result.non_2xx or result.errors:
                raise RuntimeError(f"{label}: {result.non_2xx} non-2xx, {result.errors} errors")
            rates.append(result.requests_per_s)
            cpus.append(cpu_us_per_request(spent, result.requests))
            p99s.append(result.latency_p99_ms)
        rate = float(statistics.median(rates))
        cpu_us = float(statistics.median(cpus))
        self.detail[label] = {
            "requests_per_s": round(rate),
            "server_cpu_us_per_request": round(cpu_us, 1),
            "latency_p99_ms": round(float(statistics.median(p99s)), 2),
            "runs": [round(r) for r in rates],
        }
        log(f"{label}: {rate:,.0f} req/s, {cpu_us:.0f} us CPU/req (servers)")
        return rate

    def router_hit(self, blobs: list[Blob]) -> None:
        # The store node holding the most blobs: the writer puts a run of writes in one
        # volume, which need not have a replica on any given node (e.g. store-1).
        held = Counter(url for b in blobs for url in b.replicas)
        index = max(range(1, self.layout.stores + 1), key=lambda i: held[self.layout.store_url(i)])
        store_url = self.layout.store_url(index)
        on_store = [b for b in blobs if store_url in b.replicas]
        log(f"warming the cache with {len(on_store):,} photos through the router")
        asyncio.run(self._warm([b.photo_path for b in on_store]))
        via_router = self.wrk_run(
            "router_cache_hit",
            self.layout.router_url,
            [b.photo_path for b in on_store],
            self.pids("router", "cache"),
        )
        store_pid = [e.pid for e in self.running.values() if e.name == f"store-{index}"]
        direct = self.wrk_run(
            "store_direct", store_url, [b.needle_path for b in on_store], store_pid
        )
        self.figures["router_hit_vs_store"] = round(via_router / direct, 3)

    async def _warm(self, paths: list[str]) -> None:
        """Reads every path through the router until the cache holds them all: the figure
        is about hits. The router admits only photos of writable volumes, and a volume the
        load phase left read-only for a while (a write that timed out on a busy machine)
        is not admitted until the router's lookup says it is writable again, so a pass
        that left photos out is repeated, up to WARM_S."""
        deadline = time.monotonic() + WARM_S
        passes = 0
        async with aiohttp.ClientSession() as s:
            while True:
                passes += 1
                for p in paths:
                    async with s.get(self.layout.router_url + p) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"warming {p}: HTTP {r.status}")
                async with s.get(self.layout.cache_url + "/status", headers=self._admin()) as r:
                    status = await r.json(content_type=None)
                if status["lru"]["items"] >= len(paths):
                    break
                if time.monotonic() > deadline:
                    async with s.get(
                        self.layout.directory_url + "/volumes", headers=self._admin()
                    ) as r:
                        vols = (await r.json())["volumes"]
                    why = {v["volume_id"]: v.get("reason") for v in vols}
                    raise RuntimeError(
                        f"the cache holds {status['lru']['items']} of {len(paths)} photos "
                        f"after {passes} warm-up passes ({WARM_S:.0f} s); volumes: {why}"
                    )
                log(f"cache holds {status['lru']['items']:,} of {len(paths):,}: warming again")
                await asyncio.sleep(1.0)
        self.detail["cache_after_warm"] = status
        self.detail["warm_passes"] = passes

    async def puts(self) -> None:
        from directory.writer import BlobWriter

        plan = self.plan
        concurrency = plan.put_phase_concurrency
        duration = plan.duration_s  # per slice; put_slices slices per side
        payload = os.urandom(plan.object_bytes)
        base = (int(time.time() * 1000) + 10_000) << 23
        counter = iter(range(10**9))
        store_pids = self.pids("store")

        async def timed(put: Callable[[int], Awaitable[object]]) -> dict[str, float]:
            # Untimed warm-up: connections (re)opened, the writer's writable list fresh.
            await asyncio.gather(*(put(base + next(counter)) for _ in range(concurrency)))
            writes_before, syncs_before = await write_counts()
            done = 0
            deadline = time.monotonic() + duration

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    await put(base + next(counter))
                    done += 1

            stores = ProcessCpu(store_pids)
            stores.start()
            client_t0 = time.process_time()
            t0 = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.monotonic() - t0
            client_s = time.process_time() - client_t0
            store_s = stores.stop()
            writes_after, syncs_after = await write_counts()
            return {
                "per_s": done / elapsed,
                # Group commit: fewer writes per batch on a node cost it more CPU per write.
                "syncs_per_replica_write": (syncs_after - syncs_before)
                / max(1, writes_after - writes_before),
                "client_cpu_us": cpu_us_per_request(client_s, done),
                "store_cpu_us": cpu_us_per_request(store_s, done),
            }

        store_urls = [self.layout.store_url(i) for i in range(1, self.layout.stores + 1)]

        async def write_counts() -> tuple[int, int]:
            """(needle writes, fdatasyncs) of every store node's volumes so far."""
            writes = syncs = 0
            for url in store_urls:
                async with StoreClient(url, credentials=self.creds) as c:
                    for v in await c.volumes():
                        writes += int(v["writes"])
                        syncs += int(v["syncs"])
            return writes, syncs

        alt = ALT_KEY
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.layout.directory_url + "/writable", headers=self._admin()) as r,
        ):
            vid = (await r.json())["volumes"][0]["volume_id"]
        # The single node: one holding the writable volume, else the first holding any
        # volume (placement need not have put one on store-1).
        held: dict[str, set[int]] = {}
        for url in store_urls:
            async with StoreClient(url, credentials=self.creds) as c:
                held[url] = {v["volume_id"] for v in await c.volumes()}
        single = next((u for u in store_urls if vid in held[u]), None) or next(
            u for u in store_urls if held[u]
        )
        target = vid if vid in held[single] else sorted(held[single])[0]
        auth = self.creds.header(Purpose.WRITE)
        http = LeanHTTPClient()

        async def put_1x(key: int) -> None:
            # Per put what BlobWriter does per replica.
            headers = (
                ("Authorization", auth),
                ("X-Pinhole-Checksum", f"{xxhash.xxh3_64_intdigest(payload):016x}"),
                ("Content-Type", "application/octet-stream"),
            )
            url = single + needle_path(target, key, alt, 1)
            resp = await http.request("PUT", url, headers=headers, body=payload, timeout_s=10.0)
            if resp.status != 201:
                raise RuntimeError(f"PUT {url}: HTTP {resp.status} {resp.body[:200]!r}")
            json.loads(resp.body)["etag"]

        ones: list[dict[str, float]] = []
        threes: list[dict[str, float]] = []
        try:
            async with BlobWriter(self.layout.directory_url, credentials=self.creds) as w:

                async def put_3x(key: int) -> None:
                    await w.put(key, alt, payload, cookie=1)

                # Slices alternate between the sides, so whatever else loads the machine
                # meanwhile weighs on both alike.
                for _ in range(plan.put_slices):
                    ones.append(await timed(put_1x))
                    threes.append(await timed(put_3x))
        finally:
            await http.close()

        def median(runs: list[dict[str, float]], field: str) -> float:
            return float(statistics.median(r[field] for r in runs))

        one, three = median(ones, "per_s"), median(threes, "per_s")
        self.detail["put_1x_per_s"] = round(one)
        self.detail["put_3x_per_s"] = round(three)
        self.detail["put"] = {
            "concurrency": concurrency,
            "slice_s": duration,
            "object_bytes": plan.object_bytes,
            "slices_1x_per_s": [round(r["per_s"]) for r in ones],
            "slices_3x_per_s": [round(r["per_s"]) for r in threes],
            "client_cpu_us_per_put_1x": round(median(ones, "client_cpu_us"), 1),
            "client_cpu_us_per_put_3x": round(median(threes, "client_cpu_us"), 1),
            "store_cpu_us_per_put_1x": round(median(ones, "store_cpu_us"), 1),
            "store_cpu_us_per_put_3x": round(median(threes, "store_cpu_us"), 1),
            "syncs_per_replica_write_1x": round(median(ones, "syncs_per_replica_write"), 4),
            "syncs_per_replica_write_3x": round(median(threes, "syncs_per_replica_write"), 4),
        }
        log(
            f"PUT ({concurrency} in flight): {one:,.0f}/s to one store node, "
            f"{three:,.0f}/s to 3 replicas; CPU us/put client+stores "
            f"{median(ones, 'client_cpu_us'):.0f}+{median(ones, 'store_cpu_us'):.0f} vs "
            f"{median(threes, 'client_cpu_us'):.0f}+{median(threes, 'store_cpu_us'):.0f}"
        )
        self.figures["put_3x_vs_1x"] = round(three / one, 3)
        # Per slice, so the two sides of one slice pair share whatever loaded the machine.
        cpu_ratios = [
            (t["client_cpu_us"] + t["store_cpu_us"]) / (o["client_cpu_us"] + o["store_cpu_us"])
            for o, t in zip(ones, threes, strict=True)
        ]
        self.detail["put"]["slices_cpu_3x_vs_1x"] = [round(r, 3) for r in cpu_ratios]
        self.figures["put_cpu_3x_vs_1x"] = round(float(statistics.median(cpu_ratios)), 3)

    async def failover(self, blobs: list[Blob]) -> None:
        plan = self.plan
        # The victim is the store node holding replicas of the most blobs (placement decides
        # which nodes the written volumes landed on; a fixed name may hold none of them).
        holders = Counter(url for b in blobs for url in b.replicas)
        stores = [e for e in self.running.values() if e.name.startswith("store-")]
        victim = max(stores, key=lambda e: holders[e.url])
        paths = [b.photo_path for b in blobs if victim.url in b.replicas]
        if not paths:
            raise RuntimeError("no written blob has a replica on any store node")
        latencies: list[float] = []
        errors = 0
        duration = max(3.0, plan.duration_s * 3)
        deadline = time.monotonic() + duration
        # Not admitted to the cache (a CDN's request): every GET reaches a store replica.
        headers = {"Via": "1.1 bench-cdn"}
        async with aiohttp.ClientSession() as s:

            async def worker(n: int) -> None:
                nonlocal errors
                i = n
                while time.monotonic() < deadline:
                    p = paths[i % len(paths)]
                    i += plan.failover_concurrency
                    t0 = time.perf_counter()
                    try:
                        async with s.get(self.layout.router_url + p, headers=headers) as r:
                            await r.read()
                            ok = r.status == 200
                    except aiohttp.ClientError:
                        ok = False
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if not ok:
                        errors += 1

            async def kill_later() -> None:
                await asyncio.sleep(duration / 3)
                log(f"killing {victim.name} (pid {victim.pid}) with SIGKILL")
                os.kill(victim.pid, signal.SIGKILL)

            await asyncio.gather(
                kill_later(), *(worker(n) for n in range(plan.failover_concurrency))
            )
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
        self.detail["failover"] = {
            "requests": len(latencies),
            "errors": errors,
            "p50_ms": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "p99_ms": round(p99, 2),
            "max_ms": round(latencies[-1], 2) if latencies else None,
        }
        log(f"failover: {len(latencies):,} GETs, {errors} errors, p99 {p99:.1f} ms")
        self.figures["failover_p99_ms"] = round(p99, 2)
        self.figures["failover_errors"] = errors


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=base) as scratch:
        bench = ClusterBench(plan, Path(scratch).resolve())
        t0 = time.monotonic()
        bench.run()
        elapsed = time.monotonic() - t0
    doc = {
        **run_header("cluster", quick=quick),
        "elapsed_s": round(elapsed, 1),
        "figures": bench.figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "detail": bench.detail,
        "plan": {
            "objects": plan.objects,
            "object_bytes": plan.object_bytes,
            "duration_s": plan.duration_s,
            "runs": plan.runs,
            "put_concurrency": plan.put_concurrency,
            "get_connections": plan.get_connections,
            "failover_concurrency": plan.failover_concurrency,
        },
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
