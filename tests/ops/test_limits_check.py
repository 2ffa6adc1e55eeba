"""Size limits that must agree across tiers: a configuration where an accepted upload could
not pass a store, a cache or a router is refused when a service starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError
from ops.limits_check import check_upload_path, upload_path_problems

REPO = Path(__file__).resolve().parents[2]


def test_the_defaults_agree() -> None:
    assert upload_path_problems({}) == []
    check_upload_path({})


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"router": {"photo_bytes_max": "64 MiB"}}, "router.photo_bytes_max"),
        ({"cache": {"response_bytes_max": "64 MiB"}}, "cache.response_bytes_max"),
        (
            {"store": {"volume": {"needle_data_bytes_max": "64 MiB"}}},
            "store.volume.needle_data_bytes_max",
        ),
    ],
)
def test_a_tier_below_the_largest_upload_is_named(table: dict, key: str) -> None:
    (problem,) = upload_path_problems(table)
    assert problem.startswith(f"{key} = {64 * 1024 * 1024} is below media.limits.video_bytes_max")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_upload_path(table)
    # Lowering the uploads to fit is the other way to agree.
    fits = {**table, "media": {"limits": {"video_bytes_max": "64 MiB"}}}
    assert upload_path_problems(fits) == []


def test_a_service_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "pinhole.toml"
    config.write_text('[router]\nphoto_bytes_max = "16 MiB"\n')
    for role in ("router", "cache", "api", "worker"):
        p = subprocess.run(
            [sys.executable, "-m", "ops.cli", "--config", str(config), role, "serve",
             "--port", "0", "--root", str(tmp_path / "root")],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert p.returncode == 2, (role, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pinhole: router.photo_bytes_max"), lines
