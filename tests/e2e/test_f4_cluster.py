"""The f4 tier end to end on real processes (`pinhole up --detach`: a directory, four store
nodes, a cache, a router, four f4 storage nodes holding the cell's 14 disks, the f4 name
node), in file order:

write blobs -> seal their volume -> a migration killed with -9 half-way (reads still served
by Haystack) -> `pinhole f4 migrate --volume N` again, resuming, while a reader reads
through the router the whole time (no read fails) -> the same URLs answer the same bytes
and ETags from f4, the Haystack replicas are released and their bytes returned -> a delete
reads 404 at once, like an absent blob -> 4 blocks of a stripe deleted or corrupted, data
only, parity only and mixed: every blob reads byte-exact, then rebuild and verify -> kill -9
an f4 storage node (4 of each stripe's
14 blocks gone): every blob still reads byte-exact (reconstructed) -> it comes back with
empty disks, `pinhole f4 rebuild` restores every block and verify passes -> kill -9 the
name node: `pinhole up` brings it back and it serves again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common import credentials, photo
from common.credentials import Purpose
from directory.writer import BlobRef, BlobWriter
from f4 import index as index_file
from f4.block_store import block_name
from f4.local_block_store import LocalBlockStore
from ops import local_cluster as lc
from store.client import StoreClient
from tests.conftest import auth, creds
from tests.e2e.test_cluster import _put_with_retry
from tests.up_cluster import REPO, pinhole, up_cluster

pytestmark = pytest.mark.crash
BLOBS = 90
ALT = photo.alt_key(640, photo.Format.JPEG)


@dataclass
class F4Cluster:
    root: Path
    layout: lc.Layout
    secret: bytes
    volume: int = 0
    blobs: dict[int, tuple[BlobRef, bytes, str]] = field(default_factory=dict)  # key -> etag
    deleted: set[int] = field(default_factory=set)

    def url(self, ref: BlobRef) -> str:
        rendition, fmt = photo.split_alt(ref.alt_key)
        return self.layout.router_url + photo.photo_path(
            ref.volume_id, ref.key, ref.cookie, rendition, photo.Format(fmt)
        )

    def f4(self, *args: object, exit_code: int = 0) -> dict[str, Any]:
        p = pinhole(
            "--config", self.layout.f4_config_file, "f4", *args, "--json", cwd=REPO,
        )  # fmt: skip
        assert p.returncode == exit_code, p.stderr + p.stdout
        doc: dict[str, Any] = json.loads(p.stdout)
        return doc

    def live(self) -> list[tuple[BlobRef, bytes, str]]:
        return [v for k, v in self.blobs.items() if k not in self.deleted]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[F4Cluster]:
    root = tmp_path_factory.mktemp("f4e2e") / "cluster"
    # Without the watcher: these tests repair the cell the cron way (`pinhole f4 rebuild`);
    # tests/f4/test_coordinator.py covers the watcher.
    with up_cluster(root, "--no-f4-watch") as (layout, _):
        secret = credentials.load_secret(secret_file=layout.secret_file, default_dir=None)
        yield F4Cluster(root.resolve(), layout, secret)


async def _get(s: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with s.get(url) as r:
        return r.status, await r.read(), r.headers.get("ETag", "")


def _read_all(c: F4Cluster) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            for ref, data, etag in c.live():
                status, body, got_etag = await _get(s, c.url(ref))
                assert (status, body, got_etag) == (200, data, etag), ref

    asyncio.run(go())


def test_blobs_are_written_and_their_volume_sealed(cluster: F4Cluster) -> None:
    c = cluster
    rng = random.Random(12)
    base = int(time.time() * 1000) << 23

    async def go() -> None:
        async with BlobWriter(c.layout.directory_url, credentials=creds(c.secret)) as w:
            refs = []
            for i in range(BLOBS):
                data = rng.randbytes(rng.randrange(1, 30_000))
                refs.append((await _put_with_retry(w, base + i, data), data))
        c.volume = refs[0][0].volume_id
        async with aiohttp.ClientSession() as s:
            for ref, data in refs:
                if ref.volume_id == c.volume:
                    status, body, etag = await _get(s, c.url(ref))
                    assert status == 200 and body == data
                    c.blobs[ref.key] = (ref, data, etag)
            lookup = f"{c.layout.directory_url}/volumes/{c.volume}"
            async with s.get(lookup, headers=c_admin(c)) as r:
                lv = await r.json()
            for rep in lv["replicas"]:
                async with StoreClient(rep["url"], credentials=creds(c.secret), session=s) as sc:
                    await sc.set_mode(c.volume, "sealed")
            deadline = time.monotonic() + 30
            while lv["writable"]:
                assert time.monotonic() < deadline, lv
                await asyncio.sleep(0.2)
                async with s.get(lookup, headers=c_admin(c)) as r:
                    lv = await r.json()

    asyncio.run(go())
    assert len(c.blobs) >= 5


def c_admin(c: F4Cluster) -> dict[str, str]:
    return auth(c.secret, Purpose.ADMIN)


def _volume_files(c: F4Cluster) -> list[Path]:
    return sorted(c.root.glob(f"store-*/volumes/{c.volume}.*")) + sorted(
        c.root.glob(f"store-*/volumes/v{c.volume}.*")
    )


SMALL_BLOCK = 32 * 1024  # several stripes for a small volume (blobs < 30 KB)


def _slow_config(c: F4Cluster, migrate_mb_s: float) -> Path:
    """The local cell's config with small blocks (and a paced migration)."""
    path = c.root / f"f4-small-{migrate_mb_s}.toml"
    text = c.layout.f4_config_file.read_text().replace(
        "[f4]\n", f"[f4]\nblock_bytes = {SMALL_BLOCK}\nmigrate_mb_s = {migrate_mb_s}\n", 1
    )
    path.write_text(text)
    return path


def _migrate_args(c: F4Cluster, config: Path) -> list[object]:
    source = next(p.parent.parent.name for p in _volume_files(c))
    return [
        "--config", config, "f4", "migrate", "--volume", c.volume,
        "--haystack-dir", c.root / source / "volumes", "--media-data", c.root / "media",
        "--json",
    ]  # fmt: skip


def test_a_migration_killed_half_way_leaves_reads_on_haystack(cluster: F4Cluster) -> None:
    c = cluster
    env = {k: v for k, v in os.environ.items() if k != credentials.SECRET_ENV}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", *map(str, _migrate_args(c, _slow_config(c, 0.05)))],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    journal = c.root / "f4" / "work" / f"v{c.volume}.f4journal"
    try:
        deadline = time.monotonic() + 60
        while not (journal.exists() and json.loads(journal.read_bytes())["stripes_done"] >= 1):
            assert proc.poll() is None, "the paced migration ended before it could be killed"
            assert time.monotonic() < deadline, "no stripe written within 60 s"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert not json.loads(journal.read_bytes())["done"]
    _read_all(c)  # still Haystack's: begun, not switched
    # The begun copy is listed (lookups are snapshots at most lookup_snapshot_s old;
    # begin drops the directory's, a load already under way may still finish stale).
    deadline = time.monotonic() + 5
    while True:
        lv = _lookup(c)
        assert lv["state"] == "active"
        if "f4-name-1" in {r["node_id"] for r in lv["replicas"]}:
            break
        assert time.monotonic() < deadline, lv["replicas"]
        time.sleep(0.1)


def _lookup(c: F4Cluster) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{c.layout.directory_url}/volumes/{c.volume}", headers=c_admin(c)) as r,
        ):
            doc: dict[str, Any] = await r.json()
            return doc

    return asyncio.run(go())


def test_migration_switches_reads_to_f4_without_a_failed_read(cluster: F4Cluster) -> None:
    c = cluster
    haystack = _volume_files(c)
    assert haystack, "the volume's Haystack files"
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads

        async def go() -> None:
            nonlocal reads
            async with aiohttp.ClientSession() as s:
                while not stop.is_set():
                    for ref, data, etag in c.live():
                        status, body, got = await _get(s, c.url(ref))
                        reads += 1
                        if (status, body, got) != (200, data, etag):
                            failures.append(f"{ref.key}: {status}")

        asyncio.run(go())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        p = pinhole(*_migrate_args(c, _slow_config(c, 0.0)), cwd=REPO)
        assert p.returncode == 0, p.stderr + p.stdout
        doc = json.loads(p.stdout)
        time.sleep(1.0)  # reads after the switch too
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:5]
    assert reads > len(c.blobs)
    (row,) = doc["volumes"]
    assert row["outcome"] == "migrated" and row["switched"], row
    assert row["stripes_resumed"] >= 1 and row["stripes"] > row["stripes_resumed"]
    assert row["bytes_released"] > 0
    assert len(row["replicas_released"]) == 3
    # The Haystack replicas are gone from the stores; the directory lists the name node.
    assert _volume_files(c) == []

    lv = _lookup(c)
    assert lv["state"] == "f4"
    assert [r["node_id"] for r in lv["replicas"]] == ["f4-name-1"]
    _read_all(c)


def test_a_delete_reads_404_like_an_absent_blob(cluster: F4Cluster) -> None:
    c = cluster
    ref, _, _ = c.live()[0]

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            body = {"volume_id": ref.volume_id, "key": str(ref.key)}
            async with s.post(
                c.layout.directory_url + "/deletes", json=body,
                headers=auth(c.secret, Purpose.WRITE),
            ) as r:  # fmt: skip
                assert r.status == 200, await r.text()
            c.deleted.add(ref.key)
            status, gone, _ = await _get(s, c.url(ref))
            absent = photo.photo_path(
                ref.volume_id, ref.key + 1, ref.cookie, 640, photo.Format.JPEG
            )
            status2, never, _ = await _get(s, c.layout.router_url + absent)
            assert status == status2 == 404 and gone == never

    asyncio.run(go())
    _read_all(c)


def _block_file(c: F4Cluster, stripe: int, block: int) -> Path:
    nodes = [f"n{d:02d}" for d in range(lc.F4_DISKS)]
    idx = index_file.load(LocalBlockStore(c.root / "f4" / "blocks", nodes), c.volume)
    node = idx.stripes[stripe].nodes[block]
    return c.root / "f4" / "blocks" / node / block_name(c.volume, stripe, block)


@pytest.mark.parametrize(
    ("lost", "corrupt"),
    [((0, 1, 2, 3), ()), ((), (10, 11, 12, 13)), ((1, 12), (5, 11))],
    ids=["data-only", "parity-only", "mixed"],
)
def test_any_four_blocks_lost_or_corrupt_read_exact_and_rebuild(
    cluster: F4Cluster, lost: tuple[int, ...], corrupt: tuple[int, ...]
) -> None:
    c = cluster
    for b in lost:
        _block_file(c, 0, b).unlink()
    for b in corrupt:
        path = _block_file(c, 0, b)
        raw = bytearray(path.read_bytes())
        for at in range(0, len(raw), 1024):  # every chunk: every read of it must decode
            raw[at] ^= 0xFF
        path.write_bytes(bytes(raw))
    _read_all(c)
    assert c.f4("verify", "--volume", c.volume, exit_code=1)["ok"] is False
    rebuilt = c.f4("rebuild", "--volume", c.volume, "--media-data", c.root / "media")
    (row,) = rebuilt["volumes"]
    assert row["outcome"] == "done" and row["blocks_rebuilt"] == 4, row
    assert c.f4("verify", "--volume", c.volume)["ok"] is True
    _read_all(c)


def test_a_lost_f4_node_reads_reconstructed_then_rebuilds(cluster: F4Cluster) -> None:
    c = cluster
    running = lc.read_registry(c.root)
    victim = running["f4-node-2"]
    os.kill(victim.pid, signal.SIGKILL)
    _read_all(c)  # 4 of each stripe's 14 blocks unreachable: reconstructed
    for disk in c.layout.f4_disks(2):
        shutil.rmtree(c.root / "f4" / "blocks" / disk)
    p = pinhole("up", "--data", c.root, "--detach", cwd=REPO)
    assert p.returncode == 0, p.stderr + p.stdout
    before = c.f4("verify", "--volume", c.volume, exit_code=1)
    assert before["ok"] is False
    rebuilt = c.f4("rebuild", "--volume", c.volume, "--media-data", c.root / "media")
    (row,) = rebuilt["volumes"]
    assert row["outcome"] == "done" and row["blocks_rebuilt"] >= 4, row
    after = c.f4("verify", "--volume", c.volume)
    assert after["ok"] is True, after
    _read_all(c)


def test_a_killed_name_node_comes_back(cluster: F4Cluster) -> None:
    c = cluster
    running = lc.read_registry(c.root)
    os.kill(running["f4-name"].pid, signal.SIGKILL)
    p = pinhole("up", "--data", c.root, "--detach", cwd=REPO)
    assert p.returncode == 0, p.stderr + p.stdout
    _read_all(c)
