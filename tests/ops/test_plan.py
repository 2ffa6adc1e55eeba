"""`pinhole plan` and `pinhole bench disk` through real processes.

The plan of a fixed bench JSON (tests/ops/fixtures/plan_bench_*.json) and a load written
here is checked against a hand calculation below: plain arithmetic over the same inputs,
not the planner's functions, so a formula changed by mistake fails here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
DISK_JSON = FIXTURES / "plan_bench_disk.json"
FEED_JSON = FIXTURES / "plan_bench_feed.json"

LOAD_TOML = """
[load]
uploads_per_day = 86_400_000
photo_bytes = "1 MB"
feed_reads_per_s = 100_000
retention_days = 100
hot_to_warm_days = 30
timeline_users = 1_000_000
stories_per_day = 8_640_000
story_bytes = "200 kB"
messages_per_day = 1_000_000

[load.variants]
"1080.jpg" = "300 kB"
"640.webp" = "100 kB"
"150.avif" = "36 kB"

[assumptions]
peak_to_mean = 2.0
disk_bytes = "10 TB"
disks_per_node = 10
disk_fill_max = 0.8
disk_busy_max = 0.5
cpu_busy_max = 0.5
nic_bits_per_s = 10e9
nic_busy_max = 0.5
photo_fetches_per_feed_read = 2.0
cdn_hit_ratio = 0.9
cache_hit_ratio = 0.5
served_photo_bytes = "200 kB"
hot_read_share = 0.8
f4_cell_racks = 14
f4_hosts_per_rack = 2
redis_node_bytes = "10 GB"
redis_replicas = 1
message_row_bytes = 500
router_cpu_us_per_photo = 100.0
store_cpu_us_per_read = 50.0
f4_stretch = 1.4
ram_overhead_ratio = 1.0
syncs_per_write = 0.5
ladder_photos_per_s = 5.0
"""


def pinhole(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def hand_calculation() -> dict[str, float]:
    """The plan of LOAD_TOML with the fixtures' figures and pinhole.toml's defaults, by hand."""
    day = 86400
    # Config defaults: 100 GB volumes, placement "011" = 3 replicas, 1000 volumes per node,
    # 800 timeline entries, stories kept 24 h + a 3,600 s grace.
    volume, replicas, volumes_per_node, timeline_entries = 100e9, 3, 1000, 800
    story_days = 1 + 3600 / day
    # Needle format: 32-byte header, 16-byte footer, 32-byte alignment (16 padding on average).
    overhead = 32 + 16 + 16
    # Needle map: u8 codes into a run's table of its alt keys (the ladder's would need u32),
    # u32 offset + u16 + u8 length per needle, u64 key + u32 start per photo.
    needles = 1 + 3
    map_bytes = 1 + 4 + 2 + 1 + (8 + 4) / needles

    upload = 1_000_000 + (300_000 + 100_000 + 36_000) + needles * overhead
    story = 200_000 + needles * overhead
    per_day = 86_400_000 * upload + 8_640_000 * story
    peak = per_day / day * 2.0
    hot_logical = 86_400_000 * 30 * upload + 8_640_000 * story_days * story
    hot_raw = hot_logical * replicas
    warm_logical = 86_400_000 * 70 * upload
    usable = 10e12 * 0.8

    origin = 100_000 * 2.0 * (1 - 0.9) * (1 - 0.5)  # 10,000 photo reads/s reach the router
    hot_reads = origin * 0.8
    warm_reads = origin * 0.2
    iops = min(5000, 400e6 / 200_000)  # 200 kB photos: the 100 KiB figure, bandwidth-bound

    disks = max(
        math.ceil(hot_raw / usable),
        math.ceil(hot_reads / (iops * 0.5)),
        math.ceil(peak * replicas / (500e6 * 0.5)),
        # every needle synced, two writes sharing a sync
        math.ceil((86_400_000 + 8_640_000) * needles / day * 2.0 * replicas * 0.5 / (1000 * 0.5)),
    )
    volumes = math.ceil(hot_logical / volume)
    store_network = (peak * replicas + hot_reads * 200_000 + per_day / day) * 8
    nodes = max(
        math.ceil(disks / 10),
        math.ceil(hot_reads * 50 / 1e6 / 0.5),
        math.ceil(store_network / (10e9 * 0.5)),
        math.ceil(volumes * replicas / volumes_per_node),
    )
    hot_needles = (86_400_000 * 30 + 8_640_000 * story_days) * needles
    f4_disks = max(math.ceil(warm_logical * 1.4 / usable), math.ceil(warm_reads / (iops * 0.5)))
    redis = 1_000_000 * timeline_entries * 100.0  # bench feed: 100 bytes per entry
    return {
        "store_disks": disks,
        "store_nodes": nodes,
        "hot_volumes": volumes,
        "hot_raw_bytes": hot_raw,
        "needle_map_ram_bytes": hot_needles * replicas * map_bytes,
        "needle_map_ram_bytes_per_node": hot_needles * replicas * map_bytes / nodes,
        "warm_raw_bytes": warm_logical * 1.4,
        "rs_saved_bytes": warm_logical * (3 - 1.4),
        "f4_disks": f4_disks,
        "f4_hosts": math.ceil(f4_disks / 10),
        "f4_cells": math.ceil(f4_disks / (14 * 2 * 10)),
        "redis_timeline_bytes": redis,
        "redis_nodes": math.ceil(redis * 2 / 10e9),
        "api_processes": math.ceil(100_000 * 10.0 / 1000 / 0.5),  # bench feed: 10 ms a page
        "router_processes": math.ceil(origin * 100 / 1e6 / 0.5),
        "worker_processes": math.ceil(1000 * 2.0 / 5.0 / 0.5),  # 2,000 ladders/s at 5 each
        "ingest_network_bits_per_s": peak * (1 + replicas) * 8,
        "origin_egress_bits_per_s": origin * 200_000 * 8,
        "store_network_bits_per_s": store_network,
        "migration_bits_per_s": 86_400_000 * upload / day * (1 + 1.4) * 8,
        "message_bytes_per_day": 1_000_000 * 500,
    }


@pytest.fixture
def load_file(tmp_path: Path) -> Path:
    (tmp_path / "pinhole.toml").write_text("")  # pinhole.toml's defaults, whatever is in cwd
    path = tmp_path / "load.toml"
    path.write_text(LOAD_TOML)
    return path


def plan_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = pinhole("plan", "--bench", str(DISK_JSON), "--bench", str(FEED_JSON), *args,
                   "--json", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_plan_matches_the_hand_calculation(tmp_path: Path, load_file: Path) -> None:
    doc = plan_json(tmp_path, "--load", str(load_file))
    expected = hand_calculation()
    assert set(doc["plan"]) == set(expected)
    for name, value in expected.items():
        assert doc["plan"][name] == pytest.approx(value, rel=1e-9), name
    # The figures that bind, as the hand calculation has them.
    # 30 days of 86.4 M uploads of 1.44 MB, 3 replicas: 11.2 PB on 8 TB usable per disk.
    assert doc["plan"]["store_disks"] == 1397
    assert doc["plan"]["store_nodes"] == 140


def test_every_number_is_traced(tmp_path: Path, load_file: Path) -> None:
    doc = plan_json(tmp_path, "--load", str(load_file))
    sources = {name: given["source"] for name, given in doc["inputs"].items()}
    assert sources["rand_read_iops_100k"] == "bench disk: rand_read_iops_100k"
    assert sources["api_cpu_ms_per_feed_read"] == "bench feed: feed_http_api_cpu_ms_pinhole"
    assert sources["redis_bytes_per_timeline_entry"] == "bench feed: redis_bytes_per_timeline_entry"
    assert sources["disk_bytes"] == "assumption: disk_bytes (given)"
    assert sources["uploads_per_day"] == "load: uploads_per_day"
    assert sources["timeline_entries_max"] == "config: feed.timeline_entries_max"
    assert sources["needle_overhead_bytes"].startswith("format: store/needle.py")
    for name, q in doc["quantities"].items():
        assert q["formula"] and q["inputs"], name
        for inp, given in q["inputs"].items():
            # Each input is a given figure with its source or another computed quantity.
            src = given["source"]
            if src.startswith("computed: "):
                assert src == f"computed: {inp}" and inp in doc["quantities"]
            else:
                assert src == doc["inputs"][inp]["source"]
                assert src.split(":")[0] in ("load", "config", "format", "assumption", "bench disk",
                                             "bench feed"), src  # fmt: skip
    iops = doc["quantities"]["store_disks_by_iops"]["inputs"]
    assert iops["disk_busy_max"] == {
        "value": 0.5,
        "unit": "",
        "source": "assumption: disk_busy_max (given)",
    }


@pytest.mark.timeout(300)
def test_options_override_the_load_file_and_defaults_trace_to_config(
    tmp_path: Path, load_file: Path
) -> None:
    doc = plan_json(tmp_path, "--load", str(load_file), "--uploads-per-day", "172800000",
                    "--assume", "disk_bytes=20 TB")  # fmt: skip
    assert doc["inputs"]["uploads_per_day"]["value"] == 172_800_000
    assert doc["inputs"]["disk_bytes"] == {
        "value": 20e12, "unit": "B", "source": "assumption: disk_bytes (given)"
    }  # fmt: skip
    # Without hot_to_warm_days the age comes from the config's [f4] age_s_min.
    text = LOAD_TOML.replace("hot_to_warm_days = 30\n", "")
    load_file.write_text(text)
    doc = plan_json(tmp_path, "--load", str(load_file))
    assert doc["inputs"]["hot_to_warm_days"] == {
        "value": 90, "unit": "days", "source": "config: f4.age_s_min"
    }  # fmt: skip
    (tmp_path / "pinhole.toml").write_text("[f4]\nage_s_min = 864000.0\n")
    doc = plan_json(tmp_path, "--load", str(load_file))
    assert doc["inputs"]["hot_to_warm_days"]["value"] == 10


def test_table_and_plot(tmp_path: Path, load_file: Path) -> None:
    plot = tmp_path / "capacity.png"
    proc = pinhole("plan", "--bench", str(DISK_JSON), "--load", str(load_file), "--plot", str(plot),
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.startswith("store data disks"))
    assert "1,397 disks" in row and "by capacity" in row
    assert any(line.startswith("disk_bytes") and "assumption: disk_bytes (given)" in line
               for line in lines)  # fmt: skip
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench", "missing.json"], "pinhole: bench JSON not found: missing.json"),
        (
            ["--uploads-per-day", "-5"],
            "pinhole: load: uploads_per_day must be a finite number >= 0 (got -5.0)",
        ),
        (["--variant", "640.webp=-3"], "pinhole: --variant '640.webp=-3': not a size: '-3'"),
        (
            ["--assume", "disk_fill_max=1.5"],
            "pinhole: assumptions: disk_fill_max must be within 0..1 (got 1.5)",
        ),
        (
            ["--assume", "disks_per_node=0"],
            "pinhole: assumptions: disks_per_node must be > 0 (got 0)",
        ),
        (["--load", "nowhere.toml"], "pinhole: config file not found: nowhere.toml"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, load_file: Path, args: list[str], message: str
) -> None:
    base = ["--bench", str(DISK_JSON), "--load", str(load_file)]
    proc = pinhole("plan", *base, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == message
    assert proc.stdout == ""


@pytest.mark.timeout(300)
def test_missing_load_and_disk_figures_are_named(tmp_path: Path, load_file: Path) -> None:
    load_file.write_text(LOAD_TOML.replace("timeline_users = 1_000_000\n", ""))
    proc = pinhole("plan", "--bench", str(DISK_JSON), "--load", str(load_file), cwd=tmp_path)
    assert (proc.returncode, proc.stderr.strip()) == (2, "pinhole: load: timeline_users is missing")
    proc = pinhole("plan", "--bench", str(FEED_JSON), "--load", str(load_file), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "pinhole: no rand_read_iops_20k in the bench JSON given: pass the JSON of "
        "`pinhole bench disk` (run on the target disk) with --bench"
    )
    not_bench = tmp_path / "x.json"
    not_bench.write_text("[1, 2]")
    proc = pinhole("plan", "--bench", str(not_bench), "--load", str(load_file), cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f'pinhole: {not_bench}: not a benchmark JSON (no "benchmark" field)'
    )


@pytest.mark.bench
@pytest.mark.timeout(300)
def test_quick_disk_benchmark_runs_fio_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "disk.json"
    proc = pinhole("bench", "disk", "--quick", "--json", str(out), "--dir", str(tmp_path / "d"),
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert (doc["benchmark"], doc["mode"], doc["command"]) == (
        "disk",
        "quick",
        "pinhole bench disk --quick",
    )
    for name in (
        "rand_read_iops_20k",
        "rand_read_mb_s_20k",
        "rand_read_p99_ms_20k",
        "rand_read_iops_100k",
        "rand_read_mb_s_100k",
        "rand_read_p99_ms_100k",
        "seq_write_mb_s",
        "fsync_write_per_s",
        "fsync_write_p99_ms",
    ):
        value = doc["figures"][name]
        assert isinstance(value, int | float) and value > 0, (name, value)
    # The runs are fio's, with the store benchmark's block sizes and queue depth.
    run = doc["detail"]["fio_randread_20k_qd16"]
    assert (run["bs_bytes"], run["iodepth"], run["direct"]) == (20 * 1024, 16, True)
    assert doc["detail"]["fio_append_fdatasync_20k"]["fdatasync"] == 1
    # Bandwidth and IOPS of one run agree (MB/s = IOPS x block size).
    assert run["mb_s"] == pytest.approx(run["iops"] * 20 * 1024 / 1e6, rel=0.02)
    # The scratch files are gone; the JSON feeds `pinhole plan` as it is.
    assert [p.name for p in (tmp_path / "d").iterdir()] == []
    assert "rand_read_iops_20k" in proc.stdout
    load = tmp_path / "load.toml"
    load.write_text(LOAD_TOML)
    (tmp_path / "pinhole.toml").write_text("")
    proc = pinhole("plan", "--bench", str(out), "--load", str(load), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        json.loads(proc.stdout)["inputs"]["seq_write_mb_s"]["source"]
        == "bench disk: seq_write_mb_s"
    )
