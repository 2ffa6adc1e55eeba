"""The quick mode of `pinhole bench store` runs in CI so the benchmark cannot rot. It checks
that every figure is produced from real measurements; it makes no claim about the values
(speed figures belong to the benchmark's report, not to a unit test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

FIGURES = [
    "get_hot_vs_nginx",
    "get_cold_vs_fio",
    "get_vs_swift",
    "put_vs_swift",
    "put_durable_vs_fio_fsync",
    "ram_bytes_per_needle",
    "reopen_s",
    "lean_vs_aiohttp",
    "aiohttp_cpu_vs_lean",
    "native_cpu_vs_python",
]


@pytest.mark.timeout(900)
def test_quick_store_benchmark_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    plot = tmp_path / "store.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "store", "--quick", "--json", str(out),
         "--plot", str(plot), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=880,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    for name in FIGURES:
        value = doc["figures"][name]
        assert isinstance(value, int | float) and value > 0, (name, value)
    for label in (
        "store_get_hot_20k",
        "nginx_get_20k",
        "store_get_cold_20k",
        "store_put_20k",
        "aiohttp_get_hot_20k",
        "store_get_hot_20k_python",
    ):
        run = doc["detail"][label]
        assert run["requests_per_s"] > 0 and run["server_cpu_us_per_request"] > 0
    # The cold runs really read from the device (quick mode has enough objects not to wrap).
    # Kernel readahead around one needle can bring a few of its neighbours into the page
    # cache (seen up to 37% on a busy machine), so the bound leaves room for that; a failed
    # eviction reads almost nothing from the device.
    for tag in ("20k", "100k"):
        assert doc["detail"][f"store_get_cold_{tag}"]["share_read_from_disk"] >= 0.5
    # Group commit: the PUT run shared fdatasyncs between writes.
    assert 0 < doc["detail"]["store_put_20k"]["fdatasyncs_per_put"] < 1
    assert doc["detail"]["needle_map"]["needles"] == doc["figures"]["needle_map_needles"]
    assert plot.stat().st_size > 10_000
    assert "get_hot_vs_nginx" in proc.stdout
