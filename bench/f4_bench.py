"""`pinhole bench f4`: the f4 warm tier against Haystack and raw PyECLib, in one run, in
this process, on real files.

One run:
1. writes a sealed Haystack volume of random (incompressible, like photos) blobs with the
   store's own code (store.volume_loading), and migrates it into a 14-node local cell
   (f4.encoder.Migration, timed alone), then reads every blob back through f4 and compares;
2. raw PyECLib: the same plaintext bytes encoded in rows of encoder.ROW_BYTES per data block
   (10 rows per call), in memory: the baseline includes ECDriver.encode only, none of the
   migration's reading, sealing (AES-GCM), sums, writing or fsync;
3. healthy reads: every blob read once through the store's Volume read
   (store.volume_read.read) and once through f4's Reader, alternating blob by blob so that
   both see the same cache and load;
4. one data block lost (its file removed): its blobs read through the Reader, which falls
   back to the degraded path, bytes read from blocks and sidecars counted, `repeats` times,
   against the same blobs' healthy reads;
5. bytes on disk: every block, sidecar and index copy of the cell plus the key store's
   files, over the plaintext;
6. the 4 parity blocks of every stripe lost and rebuilt through f4.rebuild at the throttle
   (its one-second burst spent first, so the figure is the steady rate), while this process
   keeps reading blobs (none of which needs the lost blocks): the rebuild's MB/s against
   the throttle and the read p99 during it.

Figures (goals from issue 12; the table says ok or MISSED):
    encode_vs_pyeclib           migration MB/s of plaintext / raw encode MB/s (>= 0.7)
    healthy_read_vs_haystack    Haystack read time / f4 read time, same blobs (>= 0.8)
    degraded_read_bytes_ratio   bytes read per byte served, one block lost (<= 11)
    degraded_p99_vs_healthy     p99 of those degraded reads / their healthy p99 (<= 3)
    effective_replication       bytes on disk after migration / plaintext (<= 1.45)
    rebuild_vs_throttle         rebuild MB/s / the throttle (<= 1.05: the throttle holds)
    rebuild_mb_s, migrate_mb_s, pyeclib_encode_mb_s, read_p99_during_rebuild_vs_idle
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from pyeclib.ec_iface import ECDriver

from bench.report import Goals, publish, run_header
from common.jobs.local import Throttle
from f4 import index as index_file
from f4.block_store import block_name, sidecar_name
from f4.encoder import ROW_BYTES, Migration
from f4.erasure import DATA_BLOCKS, DEFAULT_EC_TYPE, PARITY_BLOCKS, STRIPE_BLOCKS, Codec
from f4.keystore import KeyStore
from f4.local_block_store import LocalBlockStore
from f4.needle_source import NeedleSource
from f4.reader import Reader
from f4.rebuild import rebuild, verify
from store import volume_read
from store.storage import OsStorage
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume, open_volume
from store.volume_state import sealed

GOALS: Final[Goals] = {
    "encode_vs_pyeclib": (">=", 0.7),
    "healthy_read_vs_haystack": (">=", 0.8),
    "degraded_read_bytes_ratio": ("<=", 11.0),
    "degraded_p99_vs_healthy": ("<=", 3.0),
    "effective_replication": ("<=", 1.45),
    "rebuild_vs_throttle": ("<=", 1.05),
}
VOLUME = 1
VOLUME_LIMITS: Final = VolumeLimits(size_bytes_max=4 << 30, memtable_entries_max=4096)
ENCODE_S_MIN: Final = 0.2  # the raw encode repeats over the bytes until this long


@dataclass(frozen=True, slots=True)
class Plan:
    blobs: int
    blob_bytes_min: int
    blob_bytes_max: int
    block_bytes: int
    degraded_repeats: int
    rebuild_mb_s: float


QUICK: Final = Plan(
    blobs=150,
    blob_bytes_min=8_000,
    blob_bytes_max=80_000,
    block_bytes=256 << 10,
    degraded_repeats=10,
    rebuild_mb_s=4.0,
)
FULL: Final = Plan(
    blobs=1200,
    blob_bytes_min=20_000,
    blob_bytes_max=200_000,
    block_bytes=4 << 20,
    degraded_repeats=20,
    rebuild_mb_s=50.0,
)

Blobs = dict[tuple[int, int], tuple[int, bytes]]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _write_volume(directory: Path, plan: Plan, rng: random.Random) -> Blobs:
    blobs: Blobs = {}
    vol = create_volume(OsStorage(directory), VOLUME, VOLUME_LIMITS)
    try:
        for i in range(plan.blobs):
            data = rng.randbytes(rng.randint(plan.blob_bytes_min, plan.blob_bytes_max))
            key, cookie = 10_000 + i, rng.getrandbits(64)
            vol.put(key, 1, cookie, data).result()
            blobs[(key, 1)] = (cookie, data)
        vol.set_state(sealed("bench"))
    finally:
        vol.close()
    return blobs


def _raw_encode_mb_s(blobs: Blobs) -> float:
    """ECDriver.encode of the plaintext in calls of 10 rows of ROW_BYTES each."""
    data = b"".join(d for _, d in blobs.values())
    call_bytes = DATA_BLOCKS * ROW_BYTES
    data += bytes(-len(data) % call_bytes)
    driver = ECDriver(k=DATA_BLOCKS, m=PARITY_BLOCKS, ec_type=DEFAULT_EC_TYPE)
    view = memoryview(data)
    encoded = 0
    started = time.perf_counter()
    while True:
        for at in range(0, len(data), call_bytes):
            driver.encode(bytes(view[at : at + call_bytes]))
        encoded += len(data)
        elapsed = time.perf_counter() - started
        if elapsed >= ENCODE_S_MIN:
            return encoded / 1e6 / elapsed


class F4Bench:
    def __init__(self, plan: Plan, scratch: Path) -> None:
        self.plan = plan
        self.volumes = scratch / "volumes"
        self.volumes.mkdir()
        self.store = LocalBlockStore(
            scratch / "blocks", [f"n{i:02d}" for i in range(STRIPE_BLOCKS)]
        )
        self.keys = KeyStore(scratch / "keys.sqlite3")
        self.work = scratch / "work"
        self.work.mkdir()
        self.figures: dict[str, float] = {}
        self.detail: dict[str, Any] = {}

    def run(self) -> None:
        blobs = _write_volume(self.volumes, self.plan, random.Random(12))
        plaintext = sum(len(d) for _, d in blobs.values())
        self._migrate(blobs, plaintext)
        self.figures["pyeclib_encode_mb_s"] = round(_raw_encode_mb_s(blobs), 1)
        self.figures["encode_vs_pyeclib"] = round(
            self.figures["migrate_mb_s"] / self.figures["pyeclib_encode_mb_s"], 4
        )
        healthy = self._healthy_reads(blobs)
        self._degraded_reads(blobs, healthy)
        self._bytes_on_disk(plaintext)
        self._rebuild(blobs, healthy)

    def _migrate(self, blobs: Blobs, plaintext: int) -> None:
        source = NeedleSource(self.volumes, VOLUME)
        try:
            migration = Migration(
                source, self.store, self.keys, self.work, block_bytes=self.plan.block_bytes
            )
            stats = migration.run()
        finally:
            source.close()
        self.figures["migrate_mb_s"] = round(stats.mb_per_s, 1)
        reader = Reader(self.store, self.keys)
        wrong = sum(reader.read(VOLUME, k, a, c) != d for (k, a), (c, d) in blobs.items())
        self.detail["migration"] = {
            "blobs": stats.blobs,
            "stripes": stats.stripes,
            "plaintext_bytes": plaintext,
            "seconds": round(stats.seconds, 3),
            "blobs_read_back_wrong": wrong,
        }

    def _healthy_reads(self, blobs: Blobs) -> dict[tuple[int, int], float]:
        """Each blob's f4 read latency; Haystack's alongside."""
        vol = open_volume(OsStorage(self.volumes), VOLUME, VOLUME_LIMITS)
        reader = Reader(self.store, self.keys)
        f4_s: dict[tuple[int, int], float] = {}
        haystack_total = f4_total = 0.0
        order = list(blobs)
        random.Random(3).shuffle(order)
        try:
            for blob in order:
                cookie, data = blobs[blob]
                t0 = time.perf_counter()
                got = volume_read.read(vol, blob[0], blob[1], cookie).data
                t1 = time.perf_counter()
                ours = reader.read(VOLUME, blob[0], blob[1], cookie)
                t2 = time.perf_counter()
                if got != data or ours != data:
                    raise AssertionError(f"blob {blob} read back wrong")
                haystack_total += t1 - t0
                f4_total += t2 - t1
                f4_s[blob] = t2 - t1
        finally:
            vol.close(checkpoint=False)
        self.figures["healthy_read_vs_haystack"] = round(haystack_total / f4_total, 3)
        self.detail["healthy_reads"] = {
            "reads": len(order),
            "haystack_us_mean": round(1e6 * haystack_total / len(order), 1),
            "f4_us_mean": round(1e6 * f4_total / len(order), 1),
            "f4_p99_us": round(1e6 * _p(list(f4_s.values()), 0.99), 1),
        }
        return f4_s

    def _degraded_reads(self, blobs: Blobs, healthy: dict[tuple[int, int], float]) -> None:
        idx = index_file.load(self.store, VOLUME)
        per_block: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for blob, entry in idx.entries.items():
            per_block.setdefault((entry.stripe, entry.block), []).append(blob)
        (stripe, block), victims = max(per_block.items(), key=lambda kv: len(kv[1]))
        node = idx.stripes[stripe].nodes[block]
        path = self.store.root / node / block_name(VOLUME, stripe, block)
        kept = path.with_name(path.name + ".away")
        path.rename(kept)
        reader = Reader(self.store, self.keys)
        degraded: list[float] = []
        healthy_again: list[float] = []
        try:
            for _ in range(self.plan.degraded_repeats):
                for blob in victims:
                    cookie, data = blobs[blob]
                    t0 = time.perf_counter()
                    if reader.read(VOLUME, blob[0], blob[1], cookie) != data:
                        raise AssertionError(f"degraded read of {blob} wrong")
                    degraded.append(time.perf_counter() - t0)
        finally:
            kept.rename(path)
        counter = reader.counter
        healthy_reader = Reader(self.store, self.keys)
        for _ in range(self.plan.degraded_repeats):
            for blob in victims:
                cookie, _data = blobs[blob]
                t0 = time.perf_counter()
                healthy_reader.read(VOLUME, blob[0], blob[1], cookie)
                healthy_again.append(time.perf_counter() - t0)
        self.figures["degraded_read_bytes_ratio"] = round(
            counter.bytes_read / counter.bytes_served, 3
        )
        self.figures["degraded_p99_vs_healthy"] = round(
            _p(degraded, 0.99) / _p(healthy_again, 0.99), 3
        )
        self.detail["degraded_reads"] = {
            "lost_block": {"stripe": stripe, "block": block},
            "blobs": len(victims),
            "reads": len(degraded),
            "degraded_reads": counter.degraded_reads,
            "bytes_read": counter.bytes_read,
            "bytes_served": counter.bytes_served,
            "degraded_p99_us": round(1e6 * _p(degraded, 0.99), 1),
            "healthy_p99_us": round(1e6 * _p(healthy_again, 0.99), 1),
        }

    def _bytes_on_disk(self, plaintext: int) -> None:
        cell = sum(p.stat().st_size for p in self.store.root.glob("*/*") if p.is_file())
        keys = sum(p.stat().st_size for p in self.keys.files())
        self.figures["effective_replication"] = round((cell + keys) / plaintext, 4)
        self.detail["bytes_on_disk"] = {"cell": cell, "key_store": keys, "plaintext": plaintext}

    def _rebuild(self, blobs: Blobs, healthy: dict[tuple[int, int], float]) -> None:
        idx = index_file.load(self.store, VOLUME)
        for s, info in enumerate(idx.stripes):
            for b in range(DATA_BLOCKS, STRIPE_BLOCKS):
                for name in (block_name(VOLUME, s, b), sidecar_name(VOLUME, s, b)):
                    self.store.delete(info.nodes[b], name)
        throttle = Throttle(self.plan.rebuild_mb_s * 1e6)
        throttle.wait(int(self.plan.rebuild_mb_s * 1e6))  # the burst, spent up front
        result: dict[str, Any] = {}

        def work() -> None:
            result["stats"] = rebuild(self.store, VOLUME, codec=Codec(), throttle=throttle)

        thread = threading.Thread(target=work, name="rebuild")
        reader = Reader(self.store, self.keys)
        during: list[float] = []
        order = list(blobs)
        thread.start()
        i = 0
        while thread.is_alive():
            blob = order[i % len(order)]
            t0 = time.perf_counter()
            reader.read(VOLUME, blob[0], blob[1], blobs[blob][0])
            during.append(time.perf_counter() - t0)
            i += 1
        thread.join()
        stats = result["stats"]
        after = verify(self.store, VOLUME)
        self.figures["rebuild_mb_s"] = round(stats.mb_per_s, 2)
        self.figures["rebuild_vs_throttle"] = round(stats.mb_per_s / self.plan.rebuild_mb_s, 3)
        if during:
            self.figures["read_p99_during_rebuild_vs_idle"] = round(
                _p(during, 0.99) / _p(list(healthy.values()), 0.99), 3
            )
        self.detail["rebuild"] = {
            "throttle_mb_s": self.plan.rebuild_mb_s,
            "blocks_rebuilt": stats.blocks_rebuilt,
            "bytes_written": stats.bytes_written,
            "seconds": round(stats.seconds, 3),
            "reads_during": len(during),
            "verify_ok_after": after.ok,
        }


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-f4-", dir=base) as scratch:
        bench = F4Bench(plan, Path(scratch).resolve())
        t0 = time.monotonic()
        try:
            bench.run()
        finally:
            bench.keys.close()
        elapsed = time.monotonic() - t0
    doc = {
        **run_header("f4", quick=quick),
        "elapsed_s": round(elapsed, 1),
        "figures": bench.figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "baselines": {
            "encode_vs_pyeclib": (
                f"ECDriver.encode ({DEFAULT_EC_TYPE}) of the same plaintext in memory, 10 rows "
                f"of {ROW_BYTES} bytes per call; no reading, sealing, sums, writes or fsync"
            ),
            "healthy_read_vs_haystack": (
                "store.volume_read.read of the same blobs, in this process, alternating"
            ),
        },
        "detail": bench.detail,
        "plan": asdict(plan),
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
