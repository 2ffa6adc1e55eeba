"""The quick mode of `pinhole bench social` runs in CI so the benchmark cannot rot: the DM
figures of `pinhole bench dm` (the same code) through a real Mosquitto and the API in its own
process, the stories tray over a
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
    "dm_saturated_delivery_p99_ms",
    "dm_saturated_sends_per_s",
    "mqtt_raw_p99_ms",
    "dm_delivery_over_raw_mqtt_p99",
    "api_cpu_us_per_send",
    "notifications_per_s",
    "notification_saturated_delivery_p99_ms",
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
    dm_plan, detail = doc["dm_plan"], doc["detail"]
    # Every send and follow was delivered (a missing wake-up fails the run), open loop at
    # the stated rate and closed loop.
    assert detail["dm"]["open"]["sends"] == dm_plan["sends"]
    assert detail["dm"]["open"]["offered_per_s"] == dm_plan["send_rate_per_s"] > 0
    assert detail["dm"]["saturated"]["sends"] == dm_plan["saturated_sends"]
    assert detail["notifications"]["open"]["follows"] == dm_plan["follows"]
    assert detail["notifications"]["saturated"]["follows"] == dm_plan["followers"]
    # The rate achieved cannot exceed the rate offered (the sends are paced).
    assert figures["dm_sends_per_s"] <= dm_plan["send_rate_per_s"] * 1.05
