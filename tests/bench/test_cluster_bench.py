"""The quick mode of `pinhole bench cluster` runs in CI so the benchmark cannot rot: every
figure comes from real measurements on a local cluster of real processes. It makes no claim
about the speed figures; it does require that failover lost no GET."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench


@pytest.mark.timeout(600)
def test_quick_cluster_benchmark_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    plot = tmp_path / "cluster.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "cluster", "--quick", "--json", str(out),
         "--plot", str(plot), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=580,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    for name in ("router_hit_vs_store", "put_3x_vs_1x", "put_cpu_3x_vs_1x", "failover_p99_ms"):
        value = doc["figures"][name]
        assert isinstance(value, int | float) and value > 0, (name, value)
    for label in ("router_cache_hit", "store_direct"):
        run = doc["detail"][label]
        assert run["requests_per_s"] > 0 and run["server_cpu_us_per_request"] > 0
    # Every GET during the failover run was answered, although a store node died mid-run.
    assert doc["figures"]["failover_errors"] == 0
    assert doc["detail"]["failover"]["requests"] > 100
    # The warm-up filled the cache: the router figure measures hits.
    assert doc["detail"]["cache_after_warm"]["lru"]["items"] > 0
    assert plot.stat().st_size > 10_000
    assert "router_hit_vs_store" in proc.stdout
