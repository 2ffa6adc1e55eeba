"""`pinhole up --join URL` on loopback, through real processes: a cluster from `pinhole up`,
a second root that joins a store node (with the store credentials file `pinhole
credentials store` writes) and a router; the directory lists the new node, places a new
volume on it, a blob written there reads back through the joined router; `pinhole status`
and `pinhole down` find the joined processes. And the one-line refusals: an unreachable
directory, a file that is no credentials file, one of another cluster."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common import credentials, photo
from common.credentials import Credentials, Purpose
from directory.writer import BlobWriter
from ops import local_cluster as lc
from tests.conftest import auth, creds
from tests.up_cluster import REPO, pinhole, up_cluster

pytestmark = pytest.mark.crash
ALT = photo.alt_key(640, photo.Format.JPEG)
SETTLE_S_MAX = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[lc.Layout, bytes]]:
    root = tmp_path_factory.mktemp("join") / "cluster"
    with up_cluster(root) as (layout, _):
        secret = credentials.load_secret(secret_file=layout.secret_file, default_dir=None)
        yield layout, secret


def _get(url: str, headers: dict[str, str]) -> Any:
    async def go() -> Any:
        async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
            assert r.status == 200, (url, r.status)
            return await r.json()

    return asyncio.run(go())


def _until_listed(layout: lc.Layout, secret: bytes, node_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_S_MAX
    while True:
        nodes = _get(layout.directory_url + "/nodes", auth(secret, Purpose.ADMIN))["nodes"]
        found = [n for n in nodes if n["node_id"] == node_id and n["alive"]]
        if found:
            return dict(found[0])
        assert time.monotonic() < deadline, nodes
        time.sleep(0.2)


def test_a_joined_store_node_is_listed_and_gets_new_volumes(
    cluster: tuple[lc.Layout, bytes], tmp_path: Path
) -> None:
    layout, secret = cluster
    store_file, router_file = tmp_path / "store.json", tmp_path / "router.json"
    for role, path in (("store", store_file), ("router", router_file)):
        p = pinhole("credentials", role, "--out", path, "--secret-file", layout.secret_file)
        assert p.returncode == 0, p.stderr
    joined = tmp_path / "host2"
    store_port, router_port = free_port(), free_port()
    p = pinhole(
        "up", "--join", layout.directory_url, "--data", joined, "--detach",
        "--credentials", store_file, "--credentials", router_file,
        "--node-id", "joined-1", "--store-port", store_port,
        "--failure-domain", "dc1/rack1/host9", "--router-port", router_port, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert p.returncode == 0, p.stderr + p.stdout
        assert f"joined-1   store     http://127.0.0.1:{store_port}" in p.stdout
        # The joined root holds its roles' credentials, never the cluster secret.
        assert not (joined / credentials.SECRET_FILE_NAME).exists()
        held = Credentials.read(joined / "credentials" / "store.json")
        assert held == Credentials.for_service(secret, "store")
        node = _until_listed(layout, secret, "joined-1")
        assert node["url"] == f"http://127.0.0.1:{store_port}"
        assert node["failure_domain"] == "dc1/rack1/host9"

        # Placement takes the least-loaded node: a new volume gets a replica on it.
        async def write_and_read() -> tuple[dict[str, Any], bytes, str]:
            admin = auth(secret, Purpose.ADMIN)
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    layout.directory_url + "/volumes", json={"count": 1}, headers=admin
                ) as r:
                    assert r.status == 201, await r.text()
                    lv = (await r.json())["volumes"][0]
                data = random.randbytes(5000)
                async with BlobWriter(layout.directory_url, credentials=creds(secret)) as w:
                    deadline = time.monotonic() + SETTLE_S_MAX
                    while True:
                        ref = await w.put(1 << 40, ALT, data, volume_id=lv["volume_id"])
                        if ref.volume_id == lv["volume_id"] or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.3)  # not writable yet: its first heartbeats
                assert ref.volume_id == lv["volume_id"]
                path = photo.photo_path(ref.volume_id, ref.key, ref.cookie, 640, photo.Format.JPEG)
                async with s.get(f"http://127.0.0.1:{router_port}{path}") as r:
                    assert r.status == 200
                    assert await r.read() == data
                return lv, data, path

        lv, _, _ = asyncio.run(write_and_read())
        assert "joined-1" in {rep["node_id"] for rep in lv["replicas"]}
        assert len(lv["replicas"]) == 3

        p = pinhole("status", "--data", joined, "--json", cwd=tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        rows = {r["name"]: r for r in json.loads(p.stdout)["services"]}
        assert set(rows) == {"joined-1", "router-1"}
        assert all(r["health"] == "ok" for r in rows.values())
        # A second `up --join` on the root starts nothing new and keeps the same processes.
        again = pinhole("up", "--join", layout.directory_url, "--data", joined, "--detach")
        assert again.returncode == 0, again.stderr
        assert f"pid {rows['joined-1']['pid']}" in again.stdout
        # `up` without --join does not start a whole cluster on a joined root.
        p = pinhole("up", "--data", joined, "--detach", cwd=tmp_path)
        assert p.returncode == 2 and "joined a cluster" in p.stderr
    finally:
        p = pinhole("down", "--data", joined, cwd=tmp_path)
    assert p.returncode == 0
    assert "stopped joined-1" in p.stdout and "stopped router-1" in p.stdout


def test_a_bad_credentials_file_is_one_line(
    cluster: tuple[lc.Layout, bytes], tmp_path: Path
) -> None:
    layout, _ = cluster
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    other = tmp_path / "other.json"
    Credentials.for_service(b"another cluster's secret, 32+ bytes", "store").write(other)
    operator = tmp_path / "operator.json"
    Credentials.from_secret(b"x" * 32).write(operator)
    store = ("--node-id", "s9", "--store-port", free_port(), "--failure-domain", "dc1/r1/h9")
    cases = [
        (garbage, "is not a pinhole credentials file"),
        (operator, "is not the credentials file of one role"),
        (other, "refused the store credentials (401)"),
        (tmp_path / "missing.json", "cannot read"),
    ]
    for path, message in cases:
        p = pinhole(
            "up", "--join", layout.directory_url, "--data", tmp_path / "h", "--detach",
            "--credentials", path, *store, cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 2, (path, p.stdout, p.stderr)
        assert message in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not lc.read_registry(tmp_path / "h")  # nothing was started
    # A store without its credentials file at all.
    p = pinhole(
        "up", "--join", layout.directory_url, "--data", tmp_path / "h", "--detach", *store,
        cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 2 and "a store needs its credentials" in p.stderr, p.stderr


def test_an_unreachable_directory_is_one_line(tmp_path: Path) -> None:
    good = tmp_path / "store.json"
    Credentials.for_service(b"s" * 32, "store").write(good)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    p = pinhole(
        "up", "--join", url, "--data", tmp_path / "h", "--detach", "--credentials", good,
        "--node-id", "s9", "--store-port", free_port(), "--failure-domain", "dc1/r1/h9",
        cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 3, p.stdout + p.stderr
    assert p.stderr.startswith(f"pinhole: cannot reach the directory at {url}")
    assert len(p.stderr.strip().splitlines()) == 1
    p = pinhole("up", "--join", "dir:8700", "--data", tmp_path / "h", "--router-port", 9)
    assert p.returncode == 2 and "is not an http(s) URL" in p.stderr
    p = pinhole("up", "--join", url, "--data", tmp_path / "h", "--node-id", "x")
    assert p.returncode == 2
    assert "needs --node-id, --store-port and --failure-domain" in p.stderr
    p = pinhole("up", "--join", url, "--data", tmp_path / "h", "--host", "0.0.0.0",
                "--router-port", 9)  # fmt: skip
    assert p.returncode == 2 and "give --advertise-host" in p.stderr, p.stderr


def test_a_joined_router_in_the_foreground_stops_on_ctrl_c(
    cluster: tuple[lc.Layout, bytes], tmp_path: Path
) -> None:
    layout, secret = cluster
    router_file = tmp_path / "router.json"
    Credentials.for_service(secret, "router").write(router_file)
    joined = tmp_path / "host3"
    p = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", "--join", layout.directory_url,
         "--data", str(joined), "--credentials", str(router_file),
         "--router-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        lines = []
        for line in p.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops them"):
                break
        assert lines and lines[-1].startswith("Ctrl-C"), lines
        router = lc.read_registry(joined)["router-1"]
        assert lc.alive(router)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
        assert "stopped router-1" in out
        assert not lc.alive(router)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        pinhole("down", "--data", joined)
