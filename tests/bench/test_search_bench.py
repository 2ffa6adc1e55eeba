"""The quick mode of `pinhole bench search` runs in CI so the benchmark cannot rot: both
engines loaded, indexed and queried. It makes no claim about the speed figures beyond
their being measured; it does hold the typo recall, which does not depend on the
machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ENGINES = ("sqlite", "postgresql")
FIGURES = (
    "typeahead_p99_ms",
    "typeahead_p50_ms",
    "like_prefix_p99_ms",
    "typeahead_over_like_p99",
    "typeahead_cpu_ms_mean",
    "typo_recall_at_10",
    "reindex_s",
)


@pytest.mark.timeout(400)
def test_quick_search_benchmark_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "search", "--quick", "--json", str(out),
         "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=380,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick" and "quick mode" in doc["sizes"]
    figures = doc["figures"]
    assert set(figures) == {f"{name}_{e}" for name in FIGURES for e in ENGINES}
    for engine in ENGINES:
        assert figures[f"typeahead_p99_ms_{engine}"] > 0
        assert figures[f"like_prefix_p99_ms_{engine}"] > 0
        assert figures[f"typo_recall_at_10_{engine}"] >= 0.6, figures
        assert doc["detail"][engine]["typo_queries"] > 10
        assert set(doc["detail"][engine]["gc_full_during_requests"]) == {"count", "pause_ms_max"}
