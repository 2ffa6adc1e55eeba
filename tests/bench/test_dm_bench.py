"""The quick mode of `pinhole bench dm` runs in CI so the benchmark cannot rot: a real
Mosquitto from the generated configuration, the API in its own process, paho clients. It
makes no claim about the speed figures beyond their being measured."""

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
    "mqtt_raw_p99_ms",
    "dm_delivery_over_raw_mqtt_p99",
    "api_cpu_us_per_send",
    "notification_delivery_p99_ms",
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
    assert doc["detail"]["dm"]["sends"] == doc["plan"]["sends"]
    assert doc["detail"]["notifications"]["follows"] == doc["plan"]["followers"]
    assert "dm_delivery_p99_ms" in proc.stdout  # the table
