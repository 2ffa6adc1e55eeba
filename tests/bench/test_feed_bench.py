"""The quick mode of `pinhole bench feed` runs in CI so the benchmark cannot rot: a real
graph in SQLite, real timelines in Redis, the three strategies. It makes no claim about the
speed figures beyond their being measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.bench

STRATEGIES = ("push", "pull", "hybrid")


def _redis_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(420)
def test_quick_feed_benchmark_produces_every_figure(tmp_path: Path) -> None:
    if not _redis_up() and not IN_CI:
        pytest.skip("no Redis on 127.0.0.1:6379")
    out = tmp_path / "feed.json"
    plot = tmp_path / "feed.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "feed", "--quick", "--json", str(out),
         "--plot", str(plot), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "feed" and doc["mode"] == "quick"
    assert doc["plan"]["scaled"]  # quick mode says its thresholds are scaled

    graph = doc["graph"]
    assert graph["users"] == 3000 and graph["follows"] > graph["users"]
    assert graph["followers_max"] > 10 * graph["followers_median"]  # a power law
    assert graph["accounts_at_or_over_fanout_threshold"] >= 1

    figures = doc["figures"]
    for s in STRATEGIES:
        row = doc["strategies"][s]
        for name in ("feed_p99_ms", "feed_reads_per_s", "cpu_ms_per_read"):
            assert isinstance(row[name], int | float) and row[name] > 0, (s, name)
            assert figures[f"{name}_{s}"] == row[name]
        detail = doc["detail"][s]
        assert detail["reads"]["reads"] == doc["plan"]["reads"]
        assert set(detail["reads"]["gc_full"]) == {"count", "pause_ms_max"}
        assert detail["posting"]["jobs_failed"] == 0
        # Every strategy shows the same first pages as the pull query (the oracle).
        assert detail["oracle"]["pages_equal"] == detail["oracle"]["readers"] > 0
        assert detail["redis_keys_deleted"] > 0

    # Writes per celebrity post: every follower's timeline (push), one list (hybrid), none.
    celebrity = doc["detail"]["push"]["celebrity_post"]
    assert (
        figures["writes_per_celebrity_post_push"]
        == celebrity["followers"]
        == graph["followers_max"]
    )
    assert celebrity["timelines_holding_post"] == celebrity["followers"]
    assert figures["writes_per_celebrity_post_hybrid"] == 1
    assert figures["writes_per_celebrity_post_pull"] == 0

    # The ~5k (scaled) author is below the threshold: pushed under push and hybrid alike.
    for s in ("push", "hybrid"):
        fan = doc["detail"][s]["fanout_5k"]
        assert fan["writes"] == fan["followers"] == fan["timelines_holding_post"] > 0
        assert fan["seconds_to_99pct"] > 0
    assert figures["fanout_5k_s"] > 0 and figures["fanout_5k_s_push"] > 0
    assert doc["strategies"]["pull"]["fanout_5k_s"] is None

    assert figures["hybrid_vs_pull_reads"] > 0 and figures["hybrid_vs_push_reads"] > 0
    assert 16 < figures["redis_bytes_per_timeline_entry"] < 1000  # >= the 16-byte member
    assert set(doc["goals"]) == {
        "feed_p99_ms_hybrid",
        "feed_reads_per_s_hybrid",
        "fanout_5k_s",
        "feed_http_p99_ms_pinhole",
        "feed_http_req_per_s_pinhole",
        "feed_http_p99_ms_mastodon",
        "feed_http_req_per_s_mastodon",
    }

    # The hydrated feed over HTTP from a real API process, both APIs: real pages (20
    # posts, each with its photo), no failed request, figures and ratios present.
    http = doc["detail"]["http"]
    assert http["readers"] == doc["plan"]["readers"] and http["photos_added"] > 0
    assert http["api_processes"] == 2  # the quick plan's: two on one port
    for api, path in (("pinhole", "/api/v1/feed"), ("mastodon", "/api/v1/timelines/home")):
        row = http[api]
        assert row["path"] == path
        assert row["first_page"] == {"status": 200, "posts": 20, "photos": 20}, row
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        for name in ("p99_ms", "p50_ms", "req_per_s", "api_cpu_ms", "api_rss_mb"):
            assert figures[f"feed_http_{name}_{api}"] > 0
        assert row["api_rss_mb"] < row["api_vm_rss_mb"]  # its own memory, not the mapped file
        # CPU of the starter (idle) and of each process; both served part of the load.
        starter, *served = row["api_cpu_s_by_process"]
        assert len(served) == 2 and 0 <= starter < min(served), row
        assert 20 <= row["warmup_distinct_posts"] <= 20 * http["readers"]  # the working set
        assert figures[f"feed_http_vs_ids_p99_{api}"] == round(
            row["p99_ms"] / figures["feed_p99_ms_hybrid"], 2
        )
    assert "quiet" in doc["plan"]["http"]  # quick mode says where the goal figure is taken
    assert plot.stat().st_size > 5_000
    assert "feed_p99_ms_hybrid" in proc.stdout


def test_full_collections_are_counted_and_set_up_is_frozen() -> None:
    """Only generation 2 collections count, each once; freezing moves the heap out of the
    collector's sight (undone here: the test process goes on)."""
    import gc

    from bench.collector import FullCollections, freeze_setup

    with FullCollections() as full:
        gc.collect(0)
        gc.collect(1)
        gc.collect(2)
        gc.collect(2)
    gc.collect(2)  # after exit: not counted
    assert full.statistics()["count"] == 2
    assert full.statistics()["pause_ms_max"] > 0
    try:
        freeze_setup()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
