"""`pinhole up`, `status` and `down` through real processes: a detached local cluster on
free ports, its services found again from the registry, a crashed service reported and
started again, the data kept across down/up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from common.credentials import Purpose
from ops import local_cluster as lc
from tests.up_cluster import pinhole

pytestmark = pytest.mark.crash
REPO = Path(__file__).resolve().parents[2]


def status(data: Path, cwd: Path) -> tuple[int, dict[str, Any]]:
    p = pinhole("status", "--data", data, "--json", cwd=cwd)
    return p.returncode, json.loads(p.stdout)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
        return body


@pytest.mark.timeout(300)
def test_up_detach_status_crash_restart_down_and_back(tmp_path: Path) -> None:
    data = tmp_path / "cluster"
    base = lc.free_port_base()
    p = pinhole("up", "--data", data, "--port-base", base, "--detach", "--demo", cwd=tmp_path)
    try:
        assert p.returncode == 0, p.stderr + p.stdout
        # The first line leads to the web client, with the demo account to sign in as.
        password = json.loads((data / "api" / "demo-account.json").read_text())["password"]
        web = f"web  http://127.0.0.1:{base + lc.API_PORT_OFFSET}/  (sign in as demo / {password})"
        assert p.stdout.splitlines()[0] == web
        demo_urls = _demo_urls(p.stdout)
        assert len(demo_urls) == 6
        first = get(demo_urls[0])
        assert first.startswith(b"\xff\xd8\xff")  # the demo PNGs' JPEG 640 variants
        # The first photo's volume was moved to the f4 cell: the same URL, served from f4.
        assert _f4_demo_url(p.stdout) == demo_urls[0]
        lookup = _directory_lookup(data, demo_urls[0])
        assert lookup["state"] == "f4"
        assert [r["node_id"] for r in lookup["replicas"]] == ["f4-name-1"]

        code, doc = status(data, tmp_path)
        assert code == 0 and doc["ok"]
        names = {s["name"]: s for s in doc["services"]}
        assert set(names) == {"directory", "store-1", "store-2", "store-3", "store-4",
                              "cache-1", "f4-node-1", "f4-node-2", "f4-node-3", "f4-node-4",
                              "f4-name", "router-1", "mqtt", "api", "worker-1",
                              "worker-2", "f4-watch"}  # fmt: skip
        assert {s["role"] for s in doc["services"]} == {
            "directory", "store", "cache", "f4-node", "f4-name", "router", "mqtt", "api",
            "worker", "f4-watch"
        }  # fmt: skip
        assert all(s["health"] == "ok" and s["pid"] for s in doc["services"])
        assert names["router-1"]["url"] == f"http://127.0.0.1:{base + lc.ROUTER_PORT_OFFSET}"
        # The API hands out credentials of the cluster's own broker.
        grant = _realtime_credentials(data)
        assert grant["port"] == base + lc.MQTT_PORT_OFFSET and grant["password"]

        # A crashed service is reported, and `up` starts it again.
        os.kill(names["store-3"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            code, doc = status(data, tmp_path)
            row = next(s for s in doc["services"] if s["name"] == "store-3")
            if row["health"] == "down" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert code == 1 and row["health"] == "down" and row["pid"] is None
        p = pinhole("up", "--data", data, "--detach", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        code, doc = status(data, tmp_path)
        assert code == 0, doc
        again = {s["name"]: s["pid"] for s in doc["services"]}
        assert again["store-3"] != names["store-3"]["pid"]
        assert again["store-1"] == names["store-1"]["pid"]  # running ones are left alone

        # down stops everything; up on the same data dir brings the same photos back.
        p = pinhole("down", "--data", data, cwd=tmp_path)
        assert p.returncode == 0 and p.stdout.count("stopped") == 17, p.stdout
        code, doc = status(data, tmp_path)
        assert code == 1 and all(s["health"] == "down" for s in doc["services"]), [
            s for s in doc["services"] if s["health"] != "down"
        ]
        for pid in again.values():
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        p = pinhole("up", "--data", data, "--detach", "--demo", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert _demo_urls(p.stdout) == demo_urls
        assert _f4_demo_url(p.stdout) == demo_urls[0]
        assert get(demo_urls[0]) == first
    finally:
        pinhole("down", "--data", data, cwd=tmp_path)


def _demo_urls(banner: str) -> list[str]:
    return [line.split()[1] for line in banner.splitlines() if line.split()[:1] == ["demo"]
            and line.split()[1] != "(f4)"]  # fmt: skip


def _f4_demo_url(banner: str) -> str:
    (url,) = [
        line.split()[2] for line in banner.splitlines() if line.split()[:2] == ["demo", "(f4)"]
    ]
    return url


def _directory_lookup(data: Path, url: str) -> dict[str, Any]:
    layout = lc.load_layout(data.resolve())
    assert layout is not None
    vid = url.split("/p/", 1)[1].split("/", 1)[0]
    admin = layout.operator_credentials().header(Purpose.ADMIN)
    request = urllib.request.Request(
        f"{layout.directory_url}/volumes/{vid}", headers={"Authorization": admin}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def _realtime_credentials(data: Path) -> dict[str, Any]:
    layout = lc.load_layout(data.resolve())
    assert layout is not None
    token = (data / "api" / "demo.token").read_text().strip()
    request = urllib.request.Request(
        f"{layout.api_url}/api/v1/realtime/credentials",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_status_without_a_cluster_is_one_line(tmp_path: Path) -> None:
    p = pinhole("status", "--data", tmp_path / "none", cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr.startswith("pinhole: no local cluster in ") and p.stderr.count("\n") == 1


def test_up_refuses_to_remove_store_nodes(tmp_path: Path) -> None:
    data = tmp_path / "c"
    data.mkdir()
    lc.save_layout(lc.Layout(root=data.resolve(), port_base=lc.free_port_base(), stores=5))
    p = pinhole("up", "--data", data, "--stores", 4, "--detach", cwd=tmp_path)
    assert p.returncode == 2 and "cannot remove" in p.stderr
    assert not (data / lc.REGISTRY_FILE).exists()


@pytest.mark.timeout(180)
def test_up_in_the_foreground_stops_every_service_on_sigint(tmp_path: Path) -> None:
    """Also: `pinhole --config F up` hands F to every service (the API's limits come from
    it) and F's [f4] keys to the f4 cell."""
    data = tmp_path / "fg"
    config = tmp_path / "elsewhere" / "cluster.toml"
    config.parent.mkdir()
    config.write_text("[social]\ncaption_chars_max = 1234\n[f4]\nrebuild_mb_s = 7.5\n")
    env = {k: v for k, v in os.environ.items() if k != "PINHOLE_CLUSTER_SECRET"}
    env["PYTHONPATH"] = str(REPO)
    base = lc.free_port_base()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "--config", str(config), "up", "--data", str(data),
         "--port-base", str(base), "--stores", "3"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops the cluster" in line:
                break
        assert seen and "Ctrl-C" in seen[-1], "".join(seen) + (
            proc.stderr.read() if proc.stderr else ""
        )
        code, doc = status(data, tmp_path)
        assert code == 0, doc
        pids = [s["pid"] for s in doc["services"]]
        # directory, 3 stores, cache, 4 f4 storage nodes, the f4 name node, router, the
        # MQTT broker, api, 2 workers, the f4 watcher
        assert len(pids) == 16
        instance = json.loads(get(f"http://127.0.0.1:{base + lc.API_PORT_OFFSET}/api/v1/instance"))
        assert instance["configuration"]["statuses"]["max_characters"] == 1234
        f4_toml = (data / lc.F4_CONFIG_FILE).read_text()
        assert "rebuild_mb_s = 7.5\n" in f4_toml and f'cell_root = "{data / "f4"}"' in f4_toml
        layout = lc.load_layout(data)
        assert layout is not None and layout.config_file == config
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        pinhole("down", "--data", data, cwd=tmp_path)
