"""The quick mode of `pinhole bench f4` runs in CI so the benchmark cannot rot: a local
cluster of real processes, blobs written and sealed in one Haystack volume, read through the
router, migrated by `pinhole f4 migrate`, read through the router from f4, a storage node
process killed -9, a throttled `pinhole f4 rebuild`. It makes no claim about the speed
ratios (the table says whether each goal is met); it does require what does not depend on
load: every read answered right and never from the cache (a sealed volume is not admitted),
the migration checked blob by blob, the degraded path decoding only the blob's range (about
10x its bytes, never whole blocks), bytes on disk above the code's 1.4, every block of the
killed node rebuilt with the throttle holding, and verify passing after."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.f4_bench import GOALS, QUICK
from ops import local_cluster as lc

pytestmark = pytest.mark.bench

FIGURES = (
    *GOALS,
    "migrate_mb_s",
    "migrate_vs_write_path",
    "encode_vs_pyeclib_ceiling",
    "write_path_mb_s",
    "pyeclib_encode_mb_s",
    "rebuild_mb_s",
    "read_p99_during_rebuild_vs_idle",
)


@pytest.mark.timeout(300)
def test_quick_f4_benchmark_shape_and_sane_values(tmp_path: Path) -> None:
    out, plot = tmp_path / "f4.json", tmp_path / "f4.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "f4", "--quick", "--json", str(out),
         "--plot", str(plot), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    assert plot.stat().st_size > 0
    figures = doc["figures"]
    assert set(figures) == set(FIGURES)
    for name in FIGURES:
        assert isinstance(figures[name], int | float) and figures[name] > 0, name
    for name, (op, goal) in GOALS.items():
        assert doc["goals"][name] == f"{op} {goal}"
        assert name in proc.stdout  # printed beside its goal, ok or MISSED
    assert "ECDriver.encode" in doc["baselines"]["encode_vs_pyeclib"]
    assert "router" in doc["baselines"]["healthy_read_vs_haystack"]
    assert doc["detail"]["write_path"]["blocks"] == doc["detail"]["migration"]["stripes"] * 14
    assert figures["encode_vs_pyeclib_ceiling"] == round(
        figures["write_path_mb_s"] / figures["pyeclib_encode_mb_s"], 4
    )
    # Nothing is left of the cluster: every service stopped, its directory removed.
    assert list((tmp_path / "work").iterdir()) == []

    detail = doc["detail"]
    # Both tiers read through the router, every answer from behind the cache, never a hit.
    for run in ("haystack_reads", "f4_reads"):
        reads = detail[run]
        assert set(reads["cache"]) <= {"miss", "direct"}, reads
        assert sum(reads["cache"].values()) > 0
        assert reads["requests_per_s"] > 0 and reads["server_cpu_us_per_request"] > 0
        # The total is the sum of the roles' shares, each one measured (none idle).
        roles = reads["server_cpu_us_per_request_by_role"]
        assert set(roles) == (
            {"router", "cache", "store"}
            if run == "haystack_reads"
            else {"router", "cache", "f4-name", "f4-node"}
        )
        assert all(v > 0 for v in roles.values()), roles
        assert abs(sum(roles.values()) - reads["server_cpu_us_per_request"]) < 0.5 * len(roles)
        assert 0 < reads["latency_p50_ms"] <= reads["latency_p99_ms"]
    # The Haystack side is a twin volume (the same bytes under other keys, never
    # migrated), read in runs paired with the f4 runs; the figure is the pairs' median.
    written = detail["written"]
    assert 0 < written["twin_volume"] != written["volume"] > 0
    assert QUICK.blobs / 2 <= written["in_twin_volume"] <= QUICK.blobs
    assert len(detail["twin_replicas"]) == 3
    pairs = detail["healthy_read_pairs"]
    assert len(pairs) == QUICK.read_runs
    assert len(detail["haystack_reads"]["runs"]) == len(detail["f4_reads"]["runs"]) == len(pairs)
    assert abs(figures["healthy_read_vs_haystack"] - statistics.median(pairs)) <= 0.001
    migration = detail["migration"]
    # Every blob written lands in the measured volume unless a replica failed a write (then
    # most of them do); the migration checks each one back, and any needle a failed write
    # left behind too.
    in_volume = detail["written"]["in_volume"]
    assert QUICK.blobs / 2 <= in_volume <= QUICK.blobs
    assert migration["blobs"] >= migration["blobs_checked"] >= in_volume
    assert migration["plaintext_bytes"] >= migration["written_plaintext_bytes"]
    assert len(migration["replicas_released"]) == 3

    degraded = detail["degraded_reads"]
    assert degraded["blobs"] > 0
    for side in ("healthy", "degraded"):
        assert degraded[side]["failures"] == 0
        assert degraded[side]["requests"] == QUICK.degraded_passes * degraded["blobs"]
        assert set(degraded[side]["cache"]) <= {"miss", "direct"}
    assert degraded["reader_degraded_reads"] == degraded["reader_reads"] > 0
    # Only the blob's range of 10 other blocks: ~10x plus up to 2 KiB of chunk rounding per
    # block; reading whole blocks would be far above.
    assert 10 <= figures["degraded_read_bytes_ratio"] <= 12
    on_disk = detail["bytes_on_disk"]
    assert on_disk["cell"] >= 1.4 * on_disk["plaintext"]
    assert figures["effective_replication"] >= 1.4

    rebuild = detail["rebuild"]
    assert rebuild["verify_ok_after"] is True
    killed = int(degraded["killed"].removeprefix("f4-node-"))
    disks = len(lc.Layout(root=tmp_path).f4_disks(killed))
    assert rebuild["blocks_rebuilt"] == disks * migration["stripes"]
    assert rebuild["reads_during"]["failures"] == 0 and rebuild["reads_during"]["requests"] > 0
    assert rebuild["throttle_mb_s"] == QUICK.rebuild_mb_s
    assert figures["rebuild_vs_throttle"] <= 1.05
