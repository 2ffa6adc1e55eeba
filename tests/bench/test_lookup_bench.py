"""The quick mode of `pinhole bench lookups` runs in CI so the benchmark cannot rot: a real
local cluster, a real flood client process, real photos read through the router. It makes no
claim about the latency figures (the benchmark prints whether its goal is met); it does
require what does not depend on timing: every flood answer was the 404 it must be, no real
photo read failed, and the directory was asked no more often than the router's limits
allow over the time each flood took."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.bench

FIGURES = (
    "flood_p99_vs_idle",
    "flood_p99_vs_normal_404_flood",
    "directory_lookups_per_1k_flood_gets",
    "directory_loads_per_1k_flood_gets",
    "router_cpu_us_per_flood_get",
    "directory_cpu_us_per_flood_get",
    "flood_gets_per_s",
    "normal_404_flood_gets_per_s",
    "idle_p50_ms",
    "idle_p99_ms",
    "flood_p50_ms",
    "flood_p99_ms",
    "normal_404_flood_p50_ms",
    "normal_404_flood_p99_ms",
)


def lookup_fetches_max(doc: dict[str, Any], window_s: float) -> int:
    """The most directory lookups the router may make in window_s of an unknown-volume
    flood: one probe per lookup_probe_s_min for the ids above the highest, one lookup per
    gap per unknown_volume_ttl_s, one refresh per real photo volume per lookup_ttl_s."""
    router = doc["plan"]["router"]
    setup = doc["setup"]

    def per(interval_s: float) -> int:
        return math.floor(window_s / interval_s) + 1

    return (
        per(router["lookup_probe_s_min"])
        + len(setup["gaps"]) * per(router["unknown_volume_ttl_s"])
        + len(setup["photo_volumes"]) * per(router["lookup_ttl_s"])
    )


def lookup_loads_max(doc: dict[str, Any], window_s: float) -> int:
    """The most snapshots the directory may load in window_s: one per lookup_snapshot_s.
    Ids above the snapshot's highest cost a read of the highest id, not a load, since no
    volume is created during a flood."""
    directory = doc["plan"]["directory"]
    return math.floor(window_s / directory["lookup_snapshot_s"]) + 1


@pytest.mark.timeout(300)
def test_quick_lookup_benchmark_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "lookups.json"
    plot = tmp_path / "lookups.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "lookups", "--quick", "--json", str(out),
         "--plot", str(plot), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "lookups" and doc["mode"] == "quick"
    figures = doc["figures"]
    for name in FIGURES:
        value = figures[name]
        assert isinstance(value, int | float) and value > 0, (name, value)
    assert set(doc["goals"]) == {"flood_p99_vs_idle"}

    # Every flood answer was the expected 404, and every real photo read a 200.
    plan, detail = doc["plan"], doc["detail"]
    assert figures["flood_errors"] == 0
    assert figures["real_read_errors"] == 0
    for kind, gets, answer in (
        ("flood", plan["flood_gets"], "404 volume_not_found"),
        ("normal_404_flood", plan["flood_gets"], "404 not_found"),
        ("flood_alone", plan["cpu_gets"], "404 volume_not_found"),
        ("normal_404_flood_alone", plan["cpu_gets"], "404 not_found"),
    ):
        assert detail[kind]["answers"] == {answer: gets * plan["rounds"]}, kind
        assert detail[kind]["failures"] == {}, kind
    for kind in ("idle", "flood", "normal_404_flood"):
        assert detail[kind]["reads"] > 100, kind

    # The flood reached the directory only as often as the router's limits allow over the
    # time it took, which for this flood is a few dozen lookups per 1,000 GETs at most.
    setup = doc["setup"]
    assert len(setup["gaps"]) == plan["gap_volumes"]
    assert all(g < setup["volume_id_max"] for g in setup["gaps"])
    floods = [r for r in detail["rounds"] if r["kind"] in ("flood", "flood_alone")]
    assert len(floods) == 2 * plan["rounds"]
    for r in floods:
        gets, window_s = r["flood"]["gets"], r["counters_s"]
        fetches = r["lookup"]["lookup_fetches"]
        assert 0 < fetches <= lookup_fetches_max(doc, window_s), (r["kind"], fetches, window_s)
        assert r["lookup_loads"] <= lookup_loads_max(doc, window_s), (r["kind"], window_s)
        # Ids above the highest (half the flood) never reach the directory one by one:
        # each is answered from the shared probe, at most one per lookup_probe_s_min.
        probe_s_min = plan["router"]["lookup_probe_s_min"]
        assert r["lookup"]["probes"] <= math.floor(window_s / probe_s_min) + 1
        assert r["lookup"]["unknown_answered"] >= gets // 2
        # The unknown ids remembered are the gaps, not one per made-up id.
        assert r["lookup_gauges"]["unknown_volumes_cached"] <= len(setup["gaps"])
    flood_gets = plan["flood_gets"] * plan["rounds"]
    flood_window_s = sum(r["counters_s"] for r in floods if r["kind"] == "flood")
    per_1k = figures["directory_lookups_per_1k_flood_gets"]
    assert per_1k <= lookup_fetches_max(doc, flood_window_s) * 1000 / flood_gets
    assert per_1k < 100  # a tenth of the flood at most: most GETs cost the directory nothing

    assert plot.stat().st_size > 10_000
    assert "flood_p99_vs_idle" in proc.stdout
