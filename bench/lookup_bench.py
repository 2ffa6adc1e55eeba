"""`pinhole bench lookups`: a flood of photo URLs naming volumes that do not exist, against
the latency of real photos, on a local cluster of real processes (ops/local_cluster.py).

A photo URL can name any volume id, so made-up ids must cost neither the directory nor real
photos (router/lookup.py: unknown ids below the directory's highest are remembered, ids above
it share one probe per lookup_probe_s_min). One run:

1. writes `photos` real photos of `photo_bytes` (at the published rendition 640) with
   BlobWriter and reads each once through the router, so the cache holds them;
2. leaves gaps below the directory's highest volume id: creates 2 x gap_volumes empty
   volumes and retires every other one (its rows deleted from the directory's database, its
   files from the stores). The directory hands out ids in increasing order and never drops a
   volume, so without this a cluster has no unknown id below its highest;
3. `rounds` times, three phases, each measured by the same client in this process:
   `measure_concurrency` closed-loop GETs of random real photos through the router, every
   latency recorded, and the servers' CPU:
   - idle: nothing else, for idle_s;
   - flood: while a second process (bench/lookup_flood.py) sends flood_gets GETs of photo
     URLs with made-up volume ids, flood_concurrency in flight, as fast as the router
     answers: half random ids from the highest + ABOVE_ID_MAX_MARGIN up to 2^32 - 1, half
     random ids among the gaps (random keys and cookies); every answer must be a 404
     volume_not_found;
   - normal_404_flood, the baseline: the same with flood_gets GETs of absent photos (random
     keys and cookies) on the volumes that hold the real photos, ordinary 404 traffic
     through the cache to the stores; every answer must be a 404 not_found.
   A flood phase lasts as long as its flood; the measurement covers exactly that time.
   Then both floods again, alone (cpu_gets GETs each, nobody reading real photos), for the
   servers' CPU per flood GET: during the measured flood the real reads cost the router
   far more than the flood does, and subtracting them leaves noise.

Figures (latencies pooled over the rounds, counts and CPU summed):
    flood_p99_vs_idle               real photo p99 during the flood over its idle p99 (<= 2)
    flood_p99_vs_normal_404_flood   ... over its p99 during the baseline flood
    directory_lookups_per_1k_flood_gets   requests the router made to the directory (its
                                    /status lookup.lookup_fetches, read before and after the
                                    flood) per 1,000 flood GETs
    directory_loads_per_1k_flood_gets     state snapshots the directory loaded for lookups
                                    (its /status process.lookup_loads) per 1,000 flood GETs
    router_cpu_us_per_flood_get     the router's CPU per GET of the flood run alone
    directory_cpu_us_per_flood_get  the directory's, less its idle CPU per second
                                    (heartbeats, loops) over that time
    flood_gets_per_s, normal_404_flood_gets_per_s     the flood client's own rates, measured
    {idle,flood,normal_404_flood}_{p50,p99}_ms        real photo latencies
    flood_errors                    flood answers other than the expected 404, every flood
    real_read_errors                real photo reads not answered 200, all phases

Both directory counters also include the refreshes of the real photos' volumes (one per
lookup_ttl_s each). What bounds lookup_fetches over a window of w seconds: w /
lookup_probe_s_min + 1 probes for the ids above, w / unknown_volume_ttl_s + 1 lookups per
gap (each is remembered that long), w / lookup_ttl_s + 1 per real volume; the JSON's
`plan.router` and `detail.rounds` hold what that takes (tests/bench/test_lookup_bench.py).

--quick sends 5,000 GETs per flood, not 10,000: the ids above the highest wait for the
shared probe (up to lookup_probe_s_min each), which holds a flood at about 550 GETs/s here,
and 10,000 would take the quick run well over 30 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import uvloop

from bench.lookup_flood import STARTED_LINE, percentile_ms
from bench.lookup_report import GOALS, LOOKUP_GAUGES, Phase, figures_of, write_plot
from bench.peers.cpu import ProcessCpu
from bench.report import publish, run_header
from common import credentials, photo
from common.config import build
from common.credentials import Credentials, Purpose
from common.leanhttp.client import HttpClientError, LeanHTTPClient
from directory.config import DirectoryConfig
from ops import local_cluster as lc
from ops.cli_support import load_config
from router.config import RouterConfig

KiB: Final = 1024

# The variant written and read: a published one (the router serves the original,
# rendition 0, to internal readers only).
RENDITION: Final = 640
ALT_KEY: Final = photo.alt_key(RENDITION, photo.Format.JPEG)
# The flood's upper half starts this far above the highest volume id, out of reach of any
# volume the directory could create during a run.
ABOVE_ID_MAX_MARGIN: Final = 1000
READ_TIMEOUT_S: Final = 10.0
GAPS_VISIBLE_S_MAX: Final = 15.0
# Server CPU is read at the start and end of a phase only: a sampling thread in this
# process would take the GIL from the measuring client.
CPU_SAMPLE_INTERVAL_S: Final = 3600.0

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    mode: str
    photos: int
    photo_bytes: int
    idle_s: float
    rounds: int
    flood_gets: int  # per flood
    cpu_gets: int  # per flood run alone
    flood_concurrency: int = 16
    measure_concurrency: int = 4
    gap_volumes: int = 8  # 2x are created in one POST /volumes (volumes_create_max 16)
    write_concurrency: int = 16


QUICK = Plan("quick", 500, 20 * KiB, 2.0, 1, flood_gets=5_000, cpu_gets=2_000)
FULL = Plan("full", 2_000, 20 * KiB, 10.0, 3, flood_gets=10_000, cpu_gets=10_000)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def service_config(role: str, cls: type[T]) -> T:
    """The configuration the local cluster's `role` runs with: defaults, under the table of
    ./pinhole.toml when there is one (as `pinhole <role> serve` reads it)."""
    return build(cls, dict(load_config(None).get(role, {})), where=f"{role}.")


def made_up_path(rng: random.Random, vid: int) -> str:
    """A photo URL on volume `vid` with a random key and cookie: no such photo exists."""
    key, cookie = rng.getrandbits(63), rng.getrandbits(64)
    return photo.photo_path(vid, key, cookie, RENDITION, photo.Format.JPEG)


def unknown_volume_paths(rng: random.Random, n: int, id_max: int, gaps: list[int]) -> list[str]:
    """n URLs, half on random ids far above id_max, half on random ids among `gaps`."""
    above = [
        made_up_path(rng, rng.randrange(id_max + ABOVE_ID_MAX_MARGIN, photo.VOLUME_ID_MAX + 1))
        for _ in range(n // 2)
    ]
    below = [made_up_path(rng, rng.choice(gaps)) for _ in range(n - n // 2)]
    paths = above + below
    rng.shuffle(paths)
    return paths


def absent_photo_paths(rng: random.Random, n: int, volume_ids: list[int]) -> list[str]:
    """n URLs of absent photos on the volumes `volume_ids`."""
    return [made_up_path(rng, rng.choice(volume_ids)) for _ in range(n)]


class LookupBench:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.layout = lc.Layout(
            root=work / "cluster", port_base=lc.free_port_base(), stores=4, workers=0
        )
        self.running: dict[str, lc.Running] = {}
        self.creds = Credentials.from_secret(b"unset: start() loads the cluster's secret")
        self.phases: list[Phase] = []
        self.setup: dict[str, Any] = {}

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

    def admin(self) -> tuple[tuple[str, str], ...]:
        return (("Authorization", self.creds.header(Purpose.ADMIN)),)

    def run(self) -> None:
        self.start()
        try:
            uvloop.run(self.phases_all())
        finally:
            self.stop()

    async def phases_all(self) -> None:
        plan = self.plan
        http = LeanHTTPClient(connections_per_origin_max=2 * plan.write_concurrency)
        try:
            real, volumes = await self.load()
            gaps, id_max = await self.make_gaps(http)
            await self.warm(http, real)
            self.setup.update(
                photo_volumes=sorted(volumes), gaps=gaps, volume_id_max=id_max, photos=len(real)
            )
            volume_ids = sorted(volumes)
            for i in range(plan.rounds):
                rng = random.Random(i)
                # Fresh URLs for every flood: the cache remembers 404s (negative_ttl_s).
                floods = {
                    "flood": unknown_volume_paths(rng, plan.flood_gets, id_max, gaps),
                    "normal_404_flood": absent_photo_paths(rng, plan.flood_gets, volume_ids),
                    "flood_alone": unknown_volume_paths(rng, plan.cpu_gets, id_max, gaps),
                    "normal_404_flood_alone": absent_photo_paths(rng, plan.cpu_gets, volume_ids),
                }
                log(f"round {i + 1} of {plan.rounds}")
                self.phases.append(await self.phase("idle", http, real, None))
                for kind, paths in floods.items():
                    path_file = self.work / f"{kind}-{i}.paths"
                    path_file.write_text("\n".join(paths) + "\n")
                    reads = None if kind.endswith("_alone") else real
                    self.phases.append(await self.phase(kind, http, reads, path_file))
        finally:
            await http.close()

    # -- set-up ----------------------------------------------------------------------------

    async def load(self) -> tuple[list[str], set[int]]:
        """Writes the real photos; their URL paths and volume ids."""
        from directory.writer import BlobWriter

        plan = self.plan
        log(f"writing {plan.photos:,} photos of {plan.photo_bytes // KiB} KiB, 3 replicas")
        payload = os.urandom(plan.photo_bytes)
        base = int(time.time() * 1000) << 23
        paths: list[str] = []
        volumes: set[int] = set()
        async with BlobWriter(self.layout.directory_url, credentials=self.creds) as w:
            sem = asyncio.Semaphore(plan.write_concurrency)

            async def one(i: int) -> None:
                async with sem:
                    ref = await w.put(base + i, ALT_KEY, payload, cookie=secrets.randbits(64))
                paths.append(
                    photo.photo_path(
                        ref.volume_id, ref.key, ref.cookie, RENDITION, photo.Format.JPEG
                    )
                )
                volumes.add(ref.volume_id)

            await asyncio.gather(*(one(i) for i in range(plan.photos)))
        return paths, volumes

    async def make_gaps(self, http: LeanHTTPClient) -> tuple[list[int], int]:
        """Creates 2 x gap_volumes volumes and retires every other one, the newest kept:
        (the retired ids, the directory's highest id), once lookups see both."""
        from common.db import open_database
        from directory import schema
        from directory.schema import LOCK
        from store.client import StoreClient

        directory = self.layout.directory_url
        resp = await http.request(
            "POST",
            directory + "/volumes",
            headers=(*self.admin(), ("Content-Type", "application/json")),
            body=json.dumps({"count": 2 * self.plan.gap_volumes}).encode(),
        )
        if resp.status != 201:
            raise RuntimeError(f"creating volumes: HTTP {resp.status} {resp.body[:200]!r}")
        created = sorted(json.loads(resp.body)["volumes"], key=lambda v: v["volume_id"])
        retired = created[0::2]
        gaps = [v["volume_id"] for v in retired]
        id_max = created[-1]["volume_id"]
        log(f"volumes {gaps} retired: gaps below the highest id {id_max}")
        # The directory has no verb to drop a volume: its rows go in one transaction, as
        # the directory's own writes do, then the empty volume files on the stores.
        config = dataclasses.replace(
            service_config("directory", DirectoryConfig), data_dir=self.layout.root / "directory"
        )
        db = await open_database(config.database, schema=config.database_schema or None)
        try:
            async with db.transaction(lock=LOCK) as conn:
                rp, lv = schema.replicas, schema.logical_volumes
                await conn.execute(rp.delete().where(rp.c.volume_id.in_(gaps)))
                await conn.execute(lv.delete().where(lv.c.volume_id.in_(gaps)))
        finally:
            await db.close()
        for v in retired:
            for replica in v["replicas"]:
                async with StoreClient(replica["url"], credentials=self.creds) as store:
                    await store.delete_volume(v["volume_id"])
        await self.until_gaps_visible(http, gaps, id_max)
        return gaps, id_max

    async def until_gaps_visible(self, http: LeanHTTPClient, gaps: list[int], id_max: int) -> None:
        """Until the directory's lookups (a snapshot up to lookup_snapshot_s old) answer 404
        for every gap and name id_max as the highest id."""
        read = (("Authorization", self.creds.header(Purpose.READ)),)
        deadline = time.monotonic() + GAPS_VISIBLE_S_MAX
        while True:
            answers = [
                await http.request("GET", f"{self.layout.directory_url}/volumes/{v}", headers=read)
                for v in gaps
            ]
            if all(
                a.status == 404 and a.headers.get("x-pinhole-volume-id-max") == str(id_max)
                for a in answers
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the directory still answers for the retired volumes {gaps}")
            await asyncio.sleep(0.1)

    async def warm(self, http: LeanHTTPClient, paths: list[str]) -> None:
        log(f"warming the cache with {len(paths):,} photos through the router")
        todo = iter(paths)

        async def worker() -> None:
            for p in todo:
                resp = await http.request("GET", self.layout.router_url + p)
                if resp.status != 200:
                    raise RuntimeError(f"warming {p}: HTTP {resp.status}")

        await asyncio.gather(*(worker() for _ in range(self.plan.measure_concurrency)))

    # -- phases ----------------------------------------------------------------------------

    async def counters(self, http: LeanHTTPClient) -> tuple[dict[str, int], int]:
        """The router's lookup counters and the directory's lookup_loads."""
        router = await http.request("GET", self.layout.router_url + "/status", headers=self.admin())
        directory = await http.request(
            "GET", self.layout.directory_url + "/status", headers=self.admin()
        )
        if router.status != 200 or directory.status != 200:
            raise RuntimeError(f"/status: HTTP {router.status} (router), {directory.status}")
        lookup = json.loads(router.body)["lookup"]
        loads = json.loads(directory.body)["process"]["lookup_loads"]
        return {k: v for k, v in lookup.items() if isinstance(v, int)}, int(loads)

    async def read_real(
        self, http: LeanHTTPClient, paths: list[str] | None, stop: asyncio.Event
    ) -> tuple[list[float], int]:
        """Closed-loop GETs of random real photos until `stop`: (latencies s, non-200s).
        None: no reads."""
        latencies: list[float] = []
        errors = 0
        if paths is None:
            return latencies, errors
        router = self.layout.router_url

        async def worker(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while not stop.is_set():
                url = router + rng.choice(paths)
                t0 = time.perf_counter()
                try:
                    ok = (await http.request("GET", url, timeout_s=READ_TIMEOUT_S)).status == 200
                except HttpClientError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        seeds = [secrets.randbits(32) for _ in range(self.plan.measure_concurrency)]
        await asyncio.gather(*(worker(s) for s in seeds))
        return latencies, errors

    async def phase(
        self, kind: str, http: LeanHTTPClient, real: list[str] | None, flood_paths: Path | None
    ) -> Phase:
        """`real`: the photos the measuring client reads (None: nobody reads); `flood_paths`:
        the flood's URLs (None: the phase lasts idle_s)."""
        groups = {
            "router": self.pids("router"),
            "directory": self.pids("directory"),
            "cache_stores": self.pids("cache", "store"),
        }
        lookup0, loads0 = await self.counters(http)
        counters_t0 = time.monotonic()
        proc = None if flood_paths is None else await self.start_flood(flood_paths)
        try:
            cpus = {g: ProcessCpu(p, interval_s=CPU_SAMPLE_INTERVAL_S) for g, p in groups.items()}
            for cpu in cpus.values():
                cpu.start()
            t0 = time.monotonic()
            stop = asyncio.Event()
            reading = asyncio.ensure_future(self.read_real(http, real, stop))
            try:
                flood = await self.flood_report(proc) if proc else {}
                if proc is None:
                    await asyncio.sleep(self.plan.idle_s)
            finally:
                stop.set()
                latencies, errors = await reading
            measure_s = time.monotonic() - t0
            cpu_s = {g: cpu.stop() for g, cpu in cpus.items()}
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        lookup1, loads1 = await self.counters(http)
        counters_s = time.monotonic() - counters_t0
        result = Phase(
            kind,
            latencies,
            errors,
            measure_s,
            counters_s,
            cpu_s,
            lookup={k: v - lookup0[k] for k, v in lookup1.items() if k not in LOOKUP_GAUGES},
            lookup_gauges={k: v for k, v in lookup1.items() if k in LOOKUP_GAUGES},
            lookup_loads=loads1 - loads0,
            flood=flood,
        )
        summary = f"{kind}: {measure_s:.1f} s"
        if real is not None:
            p99 = percentile_ms(sorted(latencies), 0.99)
            summary += f", {len(latencies):,} real reads, p99 {p99} ms"
        if flood:
            summary += (
                f"; flood of {flood['gets']:,} GETs at {flood['gets_per_s']:,.0f}/s, "
                f"{flood['answers']}, {result.lookup['lookup_fetches']} directory lookups"
            )
        log(summary)
        return result

    async def start_flood(self, paths: Path) -> asyncio.subprocess.Process:
        """The flood client in its own process, once it is about to send its first GET."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.lookup_flood", self.layout.router_url, str(paths),
            "--concurrency", str(self.plan.flood_concurrency),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.decode().strip() != STARTED_LINE:
            await proc.wait()
            raise RuntimeError(f"the flood client did not start (exit {proc.returncode})")
        return proc

    async def flood_report(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        """The flood client's report (bench/lookup_flood.py), once it is done."""
        assert proc.stdout is not None
        out = await proc.stdout.read()
        if await proc.wait() != 0:
            raise RuntimeError(f"the flood client failed (exit {proc.returncode})")
        report: dict[str, Any] = json.loads(out)
        return report


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    router = service_config("router", RouterConfig)
    directory = service_config("directory", DirectoryConfig)
    with tempfile.TemporaryDirectory(prefix="bench-lookups-", dir=base) as scratch:
        bench = LookupBench(plan, Path(scratch).resolve())
        t0 = time.monotonic()
        bench.run()
        elapsed = time.monotonic() - t0
    figures, detail = figures_of(bench.phases)
    detail["rounds"] = [p.detail() for p in bench.phases]
    doc = {
        **run_header("lookups", quick=quick),
        "elapsed_s": round(elapsed, 1),
        "figures": figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "detail": detail,
        "setup": bench.setup,
        "plan": {
            **asdict(plan),
            "above_id_max_margin": ABOVE_ID_MAX_MARGIN,
            "router": {
                k: getattr(router, k)
                for k in (
                    "lookup_probe_s_min",
                    "unknown_volume_ttl_s",
                    "lookup_ttl_s",
                    "unknown_volumes_cached_max",
                )
            },
            "directory": {
                k: getattr(directory, k) for k in ("lookup_snapshot_s", "lookup_reload_s_min")
            },
        },
    }
    publish(doc, GOALS, json_path=json_path, plot_path=None)
    if plot_path is not None:
        write_plot(doc, bench.phases, plot_path)
    return doc
