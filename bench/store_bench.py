"""`pinhole bench store`: the store node against its peers, measured in one run.

Figures (ratios, each against a baseline measured in the same run on the same machine):
    get_hot_vs_nginx          GET/s from the page cache / nginx serving one file per photo
    get_cold_vs_fio           GET/s with the volume evicted / fio random-read IOPS, same
                              size and queue depth (direct I/O: the raw device)
    get_vs_swift, put_vs_swift   / OpenStack Swift's object server alone on loopback, one
                              worker like the one-process store node (2-worker figures too)
    lean_vs_aiohttp           hot 20 KiB GET/s of the node / the same handler, node and
                              volume served by aiohttp (bench/peers/aiohttp_store.py); with
                              aiohttp_cpu_vs_lean, the servers' CPU per request in the same
                              ratio: what "our own HTTP layer" buys, kept measured (no goal)
    native_cpu_vs_python      the node's CPU per hot 20 KiB GET with the C read path
                              (store/native) / with PINHOLE_STORE_NATIVE=0, the node
                              restarted on the same volume: what the C call buys (no goal)
    put_durable_vs_fio_fsync  acknowledged (synced) PUT/s / fio's one-fdatasync-per-write
    ram_bytes_per_needle, reopen_s   needle map RAM and reopen time (bench/needle_map_bench.py)

Each HTTP figure comes with the server's own CPU time per request (the load generator takes
most of a core on this 2-core machine, so req/s alone undersells a lean server).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.peers import free_port
from bench.peers.aiohttp_store import AiohttpStoreProcess
from bench.peers.cpu import ProcessCpu, cpu_us_per_request
from bench.peers.debian import Availability, PeerUnavailableError, ensure_debian_packages
from bench.peers.fio import (
    STORE_READ_BLOCK_BYTES,
    STORE_READ_QUEUE_DEPTH,
    append_fdatasync_job,
    randread_job,
    run_fio,
)
from bench.peers.nginx import NginxServer
from bench.peers.pagecache import evict, evict_tree, warm
from bench.peers.swift import SwiftObjectServer, ensure_swift
from bench.peers.wrk import WrkResult, run_wrk
from bench.report import publish, run_header
from bench.store_fixtures import (
    BENCH_COOKIE,
    ObjectSet,
    load_store,
    load_tree,
    object_sets,
    shuffled_paths_file,
)
from bench.store_node import StoreNodeProcess
from common import credentials
from store import native

KiB: Final = 1024
# Below this share of reads served from the device, a "cold" run is flagged.
COLD_SHARE_MIN: Final = 0.95
GOALS: Final = {
    "get_hot_vs_nginx": (">=", 0.8),
    "get_cold_vs_fio": (">=", 0.85),
    "get_vs_swift": (">=", 10.0),
    "put_vs_swift": (">=", 10.0),
    "put_durable_vs_fio_fsync": (">=", 3.0),
    "ram_bytes_per_needle": ("<=", 10.0),
    "reopen_s": ("<", 3.0),
}


@dataclass(frozen=True)
class Plan:
    mode: str
    objects: dict[int, int]  # object size -> count
    duration_s: float  # one measured run
    cold_duration_s: float  # short enough never to wrap around the object set
    runs: int  # repetitions of each HTTP figure (median reported)
    map_needles: int
    hot_connections: int = 64
    cold_queue_depth: int = STORE_READ_QUEUE_DEPTH
    put_connections: int = 64


# Object sizes: the block sizes of the shared fio jobs (`pinhole bench disk` runs the same).
_SMALL, _LARGE = STORE_READ_BLOCK_BYTES
# Quick mode keeps enough objects that a 1 s cold run never reads one twice.
QUICK = Plan("quick", {_SMALL: 20_000, _LARGE: 10_000}, 1, 1, 1, 300_000)
FULL = Plan("full", {_SMALL: 100_000, _LARGE: 40_000}, 10, 3, 3, 10_000_000)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


class Bench:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.figures: dict[str, Any] = {}
        self.detail: dict[str, Any] = {}
        self.peers: dict[str, str] = {}
        self.paths_files: dict[int, Path] = {}  # object size -> the GET paths of its set

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def evict(self, path: Path) -> None:
        """Drops the file from the page cache, saying so when the kernel keeps some of it."""
        if not evict(path):
            self.log(f"WARNING: the kernel kept some pages of {path.name} cached")

    # -- HTTP runs -------------------------------------------------------------------------

    def http_run(
        self,
        label: str,
        pids: Callable[[], list[int]],
        before: Callable[[], None] | None = None,
        **wrk: Any,
    ) -> tuple[float, float, int]:
        """(median req/s, median server CPU us/request, fewest requests completed in a run)
        over plan.runs."""
        rates, cpus, p99s, counts = [], [], [], []
        for i in range(self.plan.runs):
            if before is not None:
                before()
            cpu = ProcessCpu(pids())
            cpu.start()
            result: WrkResult = run_wrk(seed=i + 1, **wrk)
            spent = cpu.stop()
            if result.non_2xx or result.errors:
                raise RuntimeError(f"{label}: {result.non_2xx} non-2xx, {result.errors} errors")
            rates.append(result.requests_per_s)
            cpus.append(cpu_us_per_request(spent, result.requests))
            p99s.append(result.latency_p99_ms)
            counts.append(result.requests)
        rate, cpu_us, p99 = _median(rates), _median(cpus), _median(p99s)
        self.detail[label] = {
            "requests_per_s": round(rate),
            "server_cpu_us_per_request": round(cpu_us, 1),
            "latency_p99_ms": round(p99, 2),
            "runs": [round(r) for r in rates],
        }
        self.log(f"{label}: {rate:,.0f} req/s, {cpu_us:.0f} us CPU/req, p99 {p99:.1f} ms")
        return rate, cpu_us, min(counts)

    # -- phases ----------------------------------------------------------------------------

    def run(self) -> None:
        avail = ensure_debian_packages({"nginx": "nginx", "fio": "fio", "wrk": "wrk"})
        swift = ensure_swift()
        for name, a in {**avail, "swift": swift}.items():
            self.peers[name] = a.path or f"unavailable: {a.reason}"
        if not avail["wrk"].ok:
            raise PeerUnavailableError(
                f"wrk is needed for every HTTP figure: {avail['wrk'].reason}"
            )
        sets = object_sets(self.plan.objects)
        self.log(f"writing {sum(len(s.keys) for s in sets):,} objects to the store volume")
        volume_file = load_store(self.work / "store", sets)
        secret_file = credentials.ensure_secret_file(self.work)
        with StoreNodeProcess(self.work / "store", secret_file, self.work / "store.log") as node:
            self.store_gets(node, sets, volume_file, avail)
            self.store_puts(node, avail)
            self.swift(node, swift, sets[0])
        self.aiohttp_peer(sets[0], volume_file, secret_file)
        self.python_reads(sets[0], volume_file, secret_file)
        self.needle_map()

    def store_gets(
        self,
        node: StoreNodeProcess,
        sets: list[ObjectSet],
        volume_file: Path,
        avail: dict[str, Availability],
    ) -> None:
        plan = self.plan
        nginx = None
        if avail["nginx"].ok:
            nginx = NginxServer(
                self.work / "tree", port=free_port(), workers=2, workdir=self.work / "nginx"
            )
        try:
            if nginx is not None:
                nginx.start()
            for s in sets:
                tag = f"{s.size_bytes // KiB}k"
                suffix = "" if s is sets[0] else f"_{tag}"
                paths_file = shuffled_paths_file(self.work / f"paths-{tag}", s.store_paths(), 1)
                self.paths_files[s.size_bytes] = paths_file
                warm(volume_file)
                store_rps, _, _ = self.http_run(
                    f"store_get_hot_{tag}",
                    lambda: [node.pid],
                    base_url=node.url,
                    paths=paths_file,
                    headers={"Authorization": node.read_authorization},
                    connections=plan.hot_connections,
                    duration_s=plan.duration_s,
                )
                if nginx is not None:
                    self.log(f"writing {len(s.keys):,} files of {tag} for nginx")
                    tree_paths = load_tree(self.work / "tree", s)
                    tree_file = shuffled_paths_file(self.work / f"tree-{tag}", tree_paths, 1)
                    for p in (self.work / "tree").rglob("*"):
                        if p.is_file():
                            warm(p)
                    nginx_rps, _, _ = self.http_run(
                        f"nginx_get_{tag}",
                        nginx.pids,
                        base_url=nginx.url,
                        paths=tree_file,
                        connections=plan.hot_connections,
                        duration_s=plan.duration_s,
                    )
                    self.figures[f"get_hot_vs_nginx{suffix}"] = round(store_rps / nginx_rps, 3)
                    evict_tree(self.work / "tree")
                cache_before, disk_before = node.read_sources()
                cold_rps, _, _ = self.http_run(
                    f"store_get_cold_{tag}",
                    lambda: [node.pid],
                    before=lambda: self.evict(volume_file),
                    base_url=node.url,
                    paths=paths_file,
                    headers={"Authorization": node.read_authorization},
                    order="sequential",
                    connections=plan.cold_queue_depth,
                    duration_s=plan.cold_duration_s,
                )
                # A cold figure is only one if the node really went to the disk.
                cache_after, disk_after = node.read_sources()
                from_disk = disk_after - disk_before
                served = from_disk + cache_after - cache_before
                cold_share = from_disk / served if served else 0.0
                self.detail[f"store_get_cold_{tag}"]["share_read_from_disk"] = round(cold_share, 3)
                if cold_share < COLD_SHARE_MIN:
                    self.log(f"WARNING: only {cold_share:.0%} of the cold {tag} reads hit the disk")
                if avail["fio"].ok:
                    iops = []
                    for _ in range(plan.runs):
                        r = run_fio(
                            randread_job(
                                volume_file,
                                bs_bytes=s.size_bytes,
                                iodepth=plan.cold_queue_depth,
                                size_bytes=volume_file.stat().st_size
                                // s.size_bytes
                                * s.size_bytes,
                                runtime_s=plan.cold_duration_s,
                            )
                        )
                        iops.append(r.iops)
                    fio_iops = _median(iops)
                    self.detail[f"fio_randread_{tag}_qd{plan.cold_queue_depth}"] = {
                        "iops": round(fio_iops),
                        "runs": [round(x) for x in iops],
                    }
                    self.log(f"fio randread {tag} QD{plan.cold_queue_depth}: {fio_iops:,.0f} IOPS")
                    self.figures[f"get_cold_vs_fio{suffix}"] = round(cold_rps / fio_iops, 3)
        finally:
            if nginx is not None:
                nginx.stop()

    def store_puts(self, node: StoreNodeProcess, avail: dict[str, Availability]) -> None:
        plan = self.plan
        size = min(plan.objects)
        put_rps, _, _ = self.http_run(
            "store_put_20k",
            lambda: [node.pid],
            base_url=node.url,
            paths=f"/n/1/{{n}}/7/{BENCH_COOKIE:016x}",
            method="PUT",
            body_bytes=size,
            headers={"Authorization": node.authorization},
            connections=plan.put_connections,
            duration_s=plan.duration_s,
        )
        self.detail["store_put_20k"]["fdatasyncs_per_put"] = node.syncs_per_write()
        if avail["fio"].ok:
            rates = []
            for i in range(plan.runs):
                target = self.work / f"fio-append-{i}"
                r = run_fio(
                    append_fdatasync_job(
                        target, bs_bytes=size, size_bytes=4 * 2**30, runtime_s=plan.duration_s
                    )
                )
                target.unlink(missing_ok=True)
                rates.append(r.iops)
            fsync_iops = _median(rates)
            self.detail["fio_append_fdatasync_20k"] = {
                "iops": round(fsync_iops),
                "runs": [round(x) for x in rates],
            }
            self.log(f"fio append+fdatasync 20k: {fsync_iops:,.0f} IOPS")
            self.figures["put_durable_vs_fio_fsync"] = round(put_rps / fsync_iops, 3)
        self.store_put_rps = put_rps

    def swift(self, node: StoreNodeProcess, swift: Availability, s: ObjectSet) -> None:
        if not swift.ok:
            self.log(f"Swift unavailable: {swift.reason}")
            return
        plan = self.plan
        rates: dict[int, tuple[float, float]] = {}
        for workers in (1, 2):
            server = SwiftObjectServer(
                self.work / f"swift-{workers}",
                port=free_port(),
                workers=workers,
                workdir=self.work / f"swift-{workers}-conf",
            )
            server.start()
            try:
                put_rps, _, completed = self.http_run(
                    f"swift_put_20k_w{workers}",
                    server.pids,
                    base_url=server.url,
                    paths=server.object_path("o{n}"),
                    method="PUT",
                    body_bytes=s.size_bytes,
                    headers=server.put_headers(),
                    header_timestamp=True,
                    connections=plan.put_connections,
                    duration_s=plan.duration_s,
                )
                # Every run wrote o2..oN (wrk spends the script's first request() on a
                # probe, so o1 is never sent); the last `connections` may have been cut
                # short when wrk stopped.
                written = completed - plan.put_connections
                if written < 2:
                    raise RuntimeError("Swift completed too few PUTs to GET them back")
                paths = [server.object_path(f"o{n}") for n in range(2, written + 1)]
                get_rps, _, _ = self.http_run(
                    f"swift_get_20k_w{workers}",
                    server.pids,
                    base_url=server.url,
                    paths=paths,
                    connections=plan.hot_connections,
                    duration_s=plan.duration_s,
                )
            finally:
                server.stop()
            rates[workers] = (get_rps, put_rps)
        # The headline compares like with like: the store node is one process, so Swift's
        # object server runs one worker. Its two-worker figures (both cores) come beside.
        store_get = self.detail["store_get_hot_20k"]["requests_per_s"]
        self.figures["get_vs_swift"] = round(store_get / rates[1][0], 2)
        self.figures["put_vs_swift"] = round(self.store_put_rps / rates[1][1], 2)
        self.figures["get_vs_swift_2_workers"] = round(store_get / rates[2][0], 2)
        self.figures["put_vs_swift_2_workers"] = round(self.store_put_rps / rates[2][1], 2)

    def aiohttp_peer(self, s: ObjectSet, volume_file: Path, secret_file: Path) -> None:
        """The hot GET of `s` again, the node's own handler behind aiohttp instead of
        leanhttp (the node has stopped: one process opens the volumes at a time)."""
        tag = f"{s.size_bytes // KiB}k"
        with AiohttpStoreProcess(
            self.work / "store", secret_file, self.work / "aiohttp-store.log"
        ) as peer:
            warm(volume_file)
            rps, cpu_us, _ = self.http_run(
                f"aiohttp_get_hot_{tag}",
                lambda: [peer.pid],
                base_url=peer.url,
                paths=self.paths_files[s.size_bytes],
                headers={"Authorization": peer.read_authorization},
                connections=self.plan.hot_connections,
                duration_s=self.plan.duration_s,
            )
        lean = self.detail[f"store_get_hot_{tag}"]
        self.figures["lean_vs_aiohttp"] = round(lean["requests_per_s"] / rps, 3)
        self.figures["aiohttp_cpu_vs_lean"] = round(cpu_us / lean["server_cpu_us_per_request"], 3)

    def python_reads(self, s: ObjectSet, volume_file: Path, secret_file: Path) -> None:
        """The hot GET of `s` again, the node restarted with its C read path off."""
        if importlib.util.find_spec("store.native._hot_read") is None:
            raise RuntimeError("store/native is not built (scripts/bootstrap builds it)")
        tag = f"{s.size_bytes // KiB}k"
        env = {**os.environ, native.ENV_SWITCH: "0"}
        with StoreNodeProcess(
            self.work / "store", secret_file, self.work / "store-python.log", env=env
        ) as node:
            warm(volume_file)
            _, cpu_us, _ = self.http_run(
                f"store_get_hot_{tag}_python",
                lambda: [node.pid],
                base_url=node.url,
                paths=self.paths_files[s.size_bytes],
                headers={"Authorization": node.read_authorization},
                connections=self.plan.hot_connections,
                duration_s=self.plan.duration_s,
            )
        c_cpu_us = self.detail[f"store_get_hot_{tag}"]["server_cpu_us_per_request"]
        self.figures["native_cpu_vs_python"] = round(c_cpu_us / cpu_us, 3)

    def needle_map(self) -> None:
        d = self.work / "needle-map"
        d.mkdir()
        n = self.plan.map_needles
        self.log(f"needle map: writing {n:,} needles through the write path")
        built = _json_subprocess(["build", str(d), str(n)])
        reopened = _json_subprocess(["reopen", str(d), "0"])
        self.detail["needle_map"] = {**built, **reopened}
        self.figures["ram_bytes_per_needle"] = reopened["ram_bytes_per_needle"]
        self.figures["ram_bytes_per_needle_written"] = built["ram_bytes_per_needle_written"]
        self.figures["reopen_s"] = reopened["reopen_s"]
        self.figures["needle_map_needles"] = built["needles"]
        self.figures["lookup_us"] = reopened["lookup_us"]
        self.log(f"needle map: {reopened}")


def _json_subprocess(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.needle_map_bench", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=base) as scratch:
        bench = Bench(plan, Path(scratch))
        t0 = time.monotonic()
        bench.run()
        elapsed = time.monotonic() - t0
    doc = {
        **run_header("store", quick=quick),
        "elapsed_s": round(elapsed, 1),
        "figures": bench.figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "detail": bench.detail,
        "peers": bench.peers,
        "plan": {
            "objects": {str(k): v for k, v in plan.objects.items()},
            "duration_s": plan.duration_s,
            "cold_duration_s": plan.cold_duration_s,
            "runs": plan.runs,
            "hot_connections": plan.hot_connections,
            "cold_queue_depth": plan.cold_queue_depth,
            "put_connections": plan.put_connections,
        },
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _whole_blocks(path: Path, block: int) -> int:
    return path.stat().st_size // block * block
