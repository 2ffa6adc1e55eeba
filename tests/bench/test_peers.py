"""The benchmark peers, run for real at tiny sizes.

A peer that cannot be found or installed fails its test with the reason: these tests
exist to prove the benchmark's comparisons can be made on this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.peers import free_port, pagecache
from bench.peers.cpu import ProcessCpu, cpu_us_per_request
from bench.peers.debian import Availability, ensure_debian_packages
from bench.peers.fio import append_fdatasync_job, ensure_fio, randread_job, run_fio
from bench.peers.hashed_tree import write_tree
from bench.peers.nginx import NginxServer, ensure_nginx
from bench.peers.swift import SwiftObjectServer, ensure_swift, swift_timestamp
from bench.peers.wrk import ensure_wrk, run_wrk

pytestmark = pytest.mark.bench

OBJECT_BYTES = 20 * 1024


def require(availability: Availability) -> str:
    """The peer's path; fail (never skip) the test with the reason when it is missing."""
    if availability.path is None:
        pytest.fail(f"{availability.command} unavailable: {availability.reason}")
    return availability.path


def random_objects(count: int, *, seed: int) -> dict[str, bytes]:
    """`count` objects named photo-<i>.jpg with random contents of varied sizes."""
    rng = random.Random(seed)
    return {f"photo-{i}.jpg": rng.randbytes(rng.randint(1, 3 * OBJECT_BYTES)) for i in range(count)}


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A hashed tree of 40 small photos: its root and the objects by URL path."""
    root = tmp_path_factory.mktemp("tree")
    objects = random_objects(40, seed=7)
    paths = write_tree(root, objects.items())
    return root, dict(zip(paths, objects.values(), strict=True))


@pytest.fixture
def nginx(photo_tree: tuple[Path, dict[str, bytes]], tmp_path: Path) -> Iterator[NginxServer]:
    require(ensure_nginx())
    root, _ = photo_tree
    with NginxServer(root, port=free_port(), workers=2, workdir=tmp_path / "nginx") as server:
        yield server


def test_hashed_tree_layout_and_contents(tmp_path: Path) -> None:
    objects = {"a.jpg": b"alpha", "b.jpg": b"", "photo-123.jpg": bytes(range(256)) * 10}
    paths = write_tree(tmp_path, objects.items())
    for path, (name, data) in zip(paths, objects.items(), strict=True):
        digest = hashlib.md5(name.encode()).hexdigest()
        assert path == f"/{digest[0:2]}/{digest[2:4]}/{name}"
        assert (tmp_path / digest[0:2] / digest[2:4] / name).read_bytes() == data
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 3
    assert all(len(f.parts) == 3 and len(f.parts[0]) == 2 and len(f.parts[1]) == 2 for f in files)
    with pytest.raises(ValueError):
        write_tree(tmp_path, [("../escape", b"x")])


@pytest.mark.parametrize("threads", [1, 3])
def test_hashed_tree_keeps_input_order_across_batches(tmp_path: Path, threads: int) -> None:
    names = [f"p{i}.jpg" for i in range(1000)]
    paths = write_tree(tmp_path, ((name, name.encode()) for name in names), threads=threads)
    assert [path.rsplit("/", 1)[1] for path in paths] == names
    assert all(
        (tmp_path / path[1:]).read_bytes() == path.rsplit("/", 1)[1].encode() for path in paths
    )


def test_debian_reports_why_it_cannot_install(monkeypatch: pytest.MonkeyPatch) -> None:
    present = ensure_debian_packages({"sh": "dash"})["sh"]
    assert present.path is not None and Path(present.path).name == "sh"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("PATH", "/nonexistent")
    availability = ensure_debian_packages({"pinhole-no-such-command": "pinhole-no-such"})
    missing = availability["pinhole-no-such-command"]
    assert missing.path is None
    assert missing.reason == "package pinhole-no-such: not root and sudo is not installed"


async def test_nginx_serves_written_files_byte_exact(
    nginx: NginxServer, photo_tree: tuple[Path, dict[str, bytes]]
) -> None:
    _, objects = photo_tree
    assert len(nginx.pids()) == 3  # master + 2 workers
    async with aiohttp.ClientSession() as session:
        for path, data in objects.items():
            async with session.get(nginx.url + path) as response:
                assert response.status == 200
                assert await response.read() == data
        async with session.get(nginx.url + "/00/00/missing.jpg") as response:
            assert response.status == 404


def test_nginx_refuses_a_port_in_use(nginx: NginxServer, tmp_path: Path) -> None:
    second = NginxServer(nginx.root, port=nginx.port, workdir=tmp_path / "second")
    with pytest.raises(RuntimeError, match="already in use"):
        second.start()
    assert second.pids() == []


def test_wrk_get_against_nginx_and_cpu(
    nginx: NginxServer, photo_tree: tuple[Path, dict[str, bytes]]
) -> None:
    require(ensure_wrk())
    _, objects = photo_tree
    cpu = ProcessCpu(nginx.pids())
    cpu.start()
    result = run_wrk(nginx.url, paths=list(objects), connections=8, duration_s=1)
    cpu_s = cpu.stop()
    assert result.requests > 100
    assert result.non_2xx == 0
    assert result.errors == 0
    assert 0.9 < result.duration_s < 2.0
    assert 0 < result.latency_p50_ms <= result.latency_p99_ms < 1000
    mean_bytes = sum(map(len, objects.values())) / len(objects)
    assert result.bytes_per_s > 0.5 * mean_bytes * result.requests_per_s
    assert cpu_s > 0
    assert 0 < cpu_us_per_request(cpu_s, result.requests) < 10_000


def test_wrk_counts_error_statuses(nginx: NginxServer) -> None:
    require(ensure_wrk())
    result = run_wrk(nginx.url, paths=["/no/such/photo.jpg"], connections=2, duration_s=1)
    assert result.requests > 0
    assert result.non_2xx == result.requests


@pytest.mark.parametrize("threads", [1, 2])
async def test_wrk_put_writes_distinct_paths(threads: int) -> None:
    require(ensure_wrk())
    seen: list[tuple[str, int, str, str]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            (
                request.path,
                len(body),
                request.headers.get("X-Timestamp", ""),
                request.headers.get("X-Bench", ""),
            )
        )
        return web.Response(status=201)

    app = web.Application()
    app.router.add_put("/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        result = await asyncio.to_thread(
            run_wrk,
            f"http://127.0.0.1:{port}",
            paths="/c/obj-{n}.jpg",
            method="PUT",
            body_bytes=1000,
            headers={"X-Bench": "yes"},
            header_timestamp=True,
            connections=4,
            threads=threads,
            duration_s=1,
        )
    finally:
        await runner.cleanup()
    assert result.requests > 0
    assert result.non_2xx == 0
    assert len(seen) >= result.requests
    paths = [path for path, _, _, _ in seen]
    assert len(set(paths)) == len(paths)
    assert {length for _, length, _, _ in seen} == {1000}
    assert {marker for _, _, _, marker in seen} == {"yes"}
    numbered: list[tuple[int, str]] = []
    for path, _, timestamp, _ in seen:
        match = re.fullmatch(r"/c/obj-(\d+)\.jpg", path)
        assert match is not None, path
        assert re.fullmatch(r"\d{10}\.\d{5}", timestamp), timestamp
        numbered.append((int(match.group(1)), timestamp))
    # Counters are thread id * 1e9 + i; within a thread, later requests carry later stamps.
    assert {counter // 1_000_000_000 for counter, _ in numbered} == set(range(threads))
    for thread in range(threads):
        stamps = [ts for counter, ts in sorted(numbered) if counter // 1_000_000_000 == thread]
        assert all(earlier < later for earlier, later in itertools.pairwise(stamps))


def test_fio_randread_and_append_fdatasync(tmp_path: Path) -> None:
    require(ensure_fio())
    read = run_fio(
        randread_job(
            tmp_path / "read.bin", bs_bytes=4096, iodepth=4, size_bytes=8 << 20, runtime_s=1
        )
    )
    assert read.iops > 0
    assert read.bw_bytes_per_s == pytest.approx(read.iops * 4096, rel=0.05)
    assert 0 < read.lat_p50_ms <= read.lat_p99_ms
    assert read.sync_lat_p50_ms is None

    target = tmp_path / "volume.bin"
    append = run_fio(
        append_fdatasync_job(target, bs_bytes=64 << 10, size_bytes=2 << 20, runtime_s=30)
    )
    assert append.iops > 0
    assert append.ios == 32
    assert target.stat().st_size == 2 << 20
    assert append.sync_lat_p50_ms is not None and append.sync_lat_p50_ms > 0


def test_pagecache_evict_lowers_resident_fraction(tmp_path: Path) -> None:
    target = tmp_path / "cached.bin"
    target.write_bytes(os.urandom(4 << 20))
    assert pagecache.warm(target) == 4 << 20
    assert pagecache.resident_fraction(target) > 0.99
    pagecache.evict(target)
    assert pagecache.resident_fraction(target) < 0.05
    empty = tmp_path / "empty.bin"
    empty.touch()
    assert pagecache.resident_fraction(empty) == 0.0


def test_process_cpu_counts_children_that_come_and_go() -> None:
    busy_child = (
        "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"
    )
    parent_code = (
        "import subprocess, sys, time\n"
        "time.sleep(0.3)\n"
        f"subprocess.run([sys.executable, '-c', {busy_child!r}])\n"
        "time.sleep(0.5)\n"
    )
    with subprocess.Popen([sys.executable, "-c", parent_code]) as parent:
        cpu = ProcessCpu([parent.pid], interval_s=0.05)
        cpu.start()
        parent.wait(timeout=30)
        seconds = cpu.stop()
    assert 0.5 < seconds < 5.0
    assert cpu_us_per_request(0.5, 1000) == 500.0


@pytest.mark.timeout(600)
async def test_swift_object_server_round_trip_and_wrk(tmp_path: Path) -> None:
    require(await asyncio.to_thread(ensure_swift))
    require(ensure_wrk())
    server = SwiftObjectServer(
        tmp_path / "devices", port=free_port(), workers=1, workdir=tmp_path / "swift"
    )
    await asyncio.to_thread(server.start)
    try:
        assert (tmp_path / "devices" / "sda1").is_dir()
        assert len(server.pids()) == 2  # parent + 1 worker
        objects = random_objects(5, seed=11)
        objects["exact.jpg"] = os.urandom(OBJECT_BYTES)
        async with aiohttp.ClientSession() as session:
            for name, data in objects.items():
                headers = {**server.put_headers(), "X-Timestamp": swift_timestamp()}
                url = server.url + server.object_path(name)
                async with session.put(url, data=data, headers=headers) as response:
                    assert response.status == 201
            for name, data in objects.items():
                async with session.get(server.url + server.object_path(name)) as response:
                    assert response.status == 200
                    assert await response.read() == data
        paths = [server.object_path(name) for name in objects]
        result = await asyncio.to_thread(
            run_wrk, server.url, paths=paths, connections=4, duration_s=1
        )
        assert result.requests > 10
        assert result.non_2xx == 0
        assert result.errors == 0
        assert 0 < result.latency_p50_ms <= result.latency_p99_ms
    finally:
        await asyncio.to_thread(server.stop)
    assert server.pids() == []
