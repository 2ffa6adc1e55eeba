"""The quick mode of `pinhole bench media` runs in CI so the benchmark cannot rot: real
uploads through a local cluster of real processes, real ladders with both libraries. It
makes no claim about the speed figures beyond their being measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench


@pytest.mark.timeout(400)
def test_quick_media_benchmark_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "media.json"
    plot = tmp_path / "media.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "media", "--quick", "--json", str(out),
         "--plot", str(plot), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=380,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    figures = doc["figures"]
    for name in ("photo_ready_p95_s", "ladder_photos_per_s", "ladder_photos_per_s_pillow",
                 "webp_bytes_vs_jpeg", "avif_bytes_vs_jpeg"):  # fmt: skip
        assert isinstance(figures[name], int | float) and figures[name] > 0, name
    assert doc["detail"]["photo_ready"]["uploads"] == 4
    assert doc["detail"]["photo"]["width"] * doc["detail"]["photo"]["height"] == 12_000_000
    for library in ("pyvips", "pillow"):
        ladder = doc["detail"][f"ladder_{library}"]
        assert ladder["variants"] == 24 and set(ladder["bytes_by_format"]) == {
            "avif",
            "webp",
            "jpeg",
        }
    assert plot.stat().st_size > 5_000
    assert "photo_ready_p95_s" in proc.stdout
