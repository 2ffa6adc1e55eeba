"""The quick mode of `pinhole bench dm` runs in CI so the benchmark cannot rot: a real
Mosquitto from the generated configuration, the API in its own process, paho clients. It
makes no claim about the speed figures beyond their being measured (and the open loop's rate
not exceeding the rate it offered)."""

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
    "dm_saturated_delivery_p99_ms",
    "dm_saturated_sends_per_s",
    "mqtt_raw_p99_ms",
    "dm_delivery_over_raw_mqtt_p99",
    "api_cpu_us_per_send",
    "notification_delivery_p99_ms",
    "notifications_per_s",
    "notification_saturated_delivery_p99_ms",
)


@pytest.mark.timeout(200)
def test_quick_dm_benchmark_produces_every_figure(tmp_path: Path) -> None:
    require_mosquitto()
    out = tmp_path / "dm.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "dm", "--quick", "--json", str(out),
         "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "dm" and doc["mode"] == "quick"
    for name in FIGURES:
        assert isinstance(doc["figures"][name], int | float) and doc["figures"][name] > 0, name
    plan, detail = doc["plan"], doc["detail"]
    # Every send and follow was delivered (a missing wake-up fails the run), open loop at
    # the stated rate and closed loop.
    assert detail["dm"]["open"]["sends"] == plan["sends"]
    assert detail["dm"]["open"]["offered_per_s"] == plan["send_rate_per_s"] > 0
    assert detail["dm"]["saturated"]["sends"] == plan["saturated_sends"]
    assert detail["notifications"]["open"]["follows"] == plan["follows"]
    assert detail["notifications"]["saturated"]["follows"] == plan["followers"]
    # The rate achieved cannot exceed the rate offered (the sends are paced).
    assert doc["figures"]["dm_sends_per_s"] <= plan["send_rate_per_s"] * 1.05
    assert "dm_delivery_p99_ms" in proc.stdout  # the table
