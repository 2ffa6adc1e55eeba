"""The quick mode of `pinhole bench f4` runs in CI so the benchmark cannot rot: a real sealed
volume migrated into a real cell, reads through both stores, a block lost, a throttled
rebuild. It makes no claim about the speed ratios (the table says whether each goal is
met); it does require what does not depend on load: every blob read back right, the
degraded path decoding only the blob's range (about 10x its bytes, never whole blocks),
bytes on disk above the code's 1.4, the throttle holding, and verify passing after the
rebuild."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.f4_bench import GOALS, QUICK

pytestmark = pytest.mark.bench

FIGURES = (
    *GOALS,
    "migrate_mb_s",
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

    detail = doc["detail"]
    assert detail["migration"]["blobs"] == QUICK.blobs
    assert detail["migration"]["blobs_read_back_wrong"] == 0
    degraded = detail["degraded_reads"]
    assert degraded["degraded_reads"] == degraded["reads"] > 0
    # Only the blob's range of 10 other blocks: ~10x plus up to 2 KiB of chunk rounding per
    # block; reading whole blocks would be far above.
    assert 10 <= figures["degraded_read_bytes_ratio"] <= 12
    on_disk = detail["bytes_on_disk"]
    assert on_disk["cell"] >= 1.4 * on_disk["plaintext"]
    assert figures["effective_replication"] >= 1.4
    rebuild = detail["rebuild"]
    assert rebuild["verify_ok_after"] is True
    assert rebuild["blocks_rebuilt"] == 4 * detail["migration"]["stripes"]
    assert rebuild["throttle_mb_s"] == QUICK.rebuild_mb_s
    assert figures["rebuild_vs_throttle"] <= 1.05
