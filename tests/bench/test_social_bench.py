"""The quick mode of `pinhole bench social` runs in CI so the benchmark cannot rot: the DM
figures through a real Mosquitto and the API in its own process, the stories tray over a
power-law population and story views on SQLite and the real Redis. It makes no claim about
the speed figures beyond their being measured, except that views are not one SQL write
each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realtime.conftest import require_mosquitto

pytestmark = pytest.mark.bench

FIGURES = (
    "dm_delivery_p99_ms",
    "dm_sends_per_s",
    "notification_delivery_p99_ms",
    "dm_saturated_sends_per_s",
    "notifications_per_s",
    "stories_tray_p99_ms",
    "stories_tray_build_p99_ms",
    "story_views_per_s",
    "sql_writes_per_view",
    "story_view_cpu_us",
)


@pytest.mark.timeout(600)
def test_quick_social_benchmark_produces_every_figure(tmp_path: Path) -> None:
    require_mosquitto()
    out = tmp_path / "social.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "social", "--quick", "--json", str(out),
         "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=580,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "social" and doc["mode"] == "quick"
    figures = doc["figures"]
    for name in FIGURES:
        assert isinstance(figures[name], int | float) and figures[name] > 0, name
    assert figures["stories_tray_users"] == doc["plan"]["users"] < 100_000
    assert "quick mode: the tray population is" in proc.stdout
    stories = doc["detail"]["stories"]
    views = stories["views"]
    assert views["views"] == doc["plan"]["views"]
    # Every first view reached SQL, in far fewer write transactions than views.
    assert views["rows_in_sql"] == views["first_views"] > 0
    assert figures["sql_writes_per_view"] < 0.1
    assert views["top_story_views"] > 100  # the skew makes one story popular
    assert stories["tray"]["authors_per_tray"] > 0
    assert doc["detail"]["dm"]["open"]["sends"] == doc["dm_plan"]["sends"]
    assert doc["detail"]["dm"]["saturated"]["sends"] == doc["dm_plan"]["saturated_sends"]
