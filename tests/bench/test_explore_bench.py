"""The quick mode of `pinhole bench explore` runs in CI so the benchmark cannot rot: the
offline quality against both baselines, page reads and a refresh pass on SQLite. It holds
the quality figures, which do not depend on the machine (the population is seeded), and
only that the timings were measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

FIGURES = {
    "explore_recall_at_24",
    "explore_ndcg_at_24",
    "popularity_recall_at_24",
    "popularity_ndcg_at_24",
    "random_recall_at_24",
    "random_ndcg_at_24",
    "explore_recall_vs_popularity",
    "rank_ms_per_user_offline",
    "explore_page_p99_ms",
    "explore_page_p50_ms",
    "explore_page_cpu_ms_mean",
    "refresh_ms_per_user",
}


@pytest.mark.timeout(300)
def test_quick_explore_benchmark_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "explore.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "explore", "--quick", "--json", str(out),
         "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick" and "quick mode" in doc["sizes"]
    figures = doc["figures"]
    assert set(figures) == FIGURES
    assert figures["explore_recall_vs_popularity"] >= 2.0, figures
    assert figures["explore_recall_at_24"] > figures["popularity_recall_at_24"]
    assert figures["popularity_recall_at_24"] > figures["random_recall_at_24"]
    assert figures["explore_ndcg_at_24"] > figures["popularity_ndcg_at_24"]
    assert figures["explore_page_p99_ms"] > 0 and figures["refresh_ms_per_user"] > 0
    assert doc["detail"]["evaluated_users"] >= 300
    assert doc["detail"]["refresh"]["users"] == 100
