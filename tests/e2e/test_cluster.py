"""The cluster end to end on real processes (`pinhole up --detach`: a directory, four store
nodes in two racks, a cache, a router), in the order the issue names:

write N blobs -> kill -9 a store node: every read still succeeds and writes continue -> add a
node, fix-replication restores 3 replicas, verify passes everywhere -> flip bytes in one
replica: reads return the right bytes and the scrubber repairs it -> the cache turns 100
concurrent misses into one store read, follows the admission rule and forgets deletes.

The tests of this module share one cluster and run in file order.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common import credentials, photo
from common.credentials import Purpose
from directory.writer import BlobRef, BlobWriter, NoWritableVolume
from ops import local_cluster as lc
from store.client import StoreClient
from tests.conftest import auth, creds
from tests.up_cluster import REPO, pinhole, up_cluster

pytestmark = pytest.mark.crash
BLOBS = 60
ALT = photo.alt_key(640, photo.Format.JPEG)  # a published variant (not the original)
SETTLE_S_MAX = 30.0


@dataclass
class Cluster:
    root: Path
    layout: lc.Layout
    secret: bytes
    blobs: dict[int, tuple[BlobRef, bytes]]
    # The store node the tests kill and bring back: store-2 when it holds replicas of the
    # blobs written, else the node holding the most (placement decides, so it is looked
    # up, not assumed).
    victim: str = "store-2"

    def run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run(_as_coroutine(coro))

    def services(self) -> dict[str, lc.Running]:
        return lc.read_registry(self.root)

    @property
    def admin(self) -> dict[str, str]:
        return auth(self.secret, Purpose.ADMIN)

    def photo_url(self, ref: BlobRef) -> str:
        rendition, fmt = photo.split_alt(ref.alt_key)
        return self.layout.router_url + photo.photo_path(
            ref.volume_id, ref.key, ref.cookie, rendition, photo.Format(fmt)
        )


async def _as_coroutine(aw: Awaitable[Any]) -> Any:
    return await aw


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("e2e") / "cluster"
    with up_cluster(root) as (layout, _):
        secret = credentials.load_secret(secret_file=layout.secret_file, default_dir=None)
        yield Cluster(root.resolve(), layout, secret, {})


async def _put_with_retry(w: BlobWriter, key: int, data: bytes) -> BlobRef:
    """A write that meets "no writable volume" while the directory grows new volumes
    waits briefly: the writer itself never half-succeeds."""
    deadline = time.monotonic() + SETTLE_S_MAX
    while True:
        try:
            return await w.put(key, ALT, data, cookie=random.getrandbits(64))
        except NoWritableVolume:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _get(s: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, bytes]:
    async with s.get(url, headers=headers) as r:
        return r.status, await r.read()


def _all_reads_succeed(c: Cluster, *, via_cdn: bool) -> None:
    async def go() -> None:
        headers = {"Via": "1.1 test-cdn"} if via_cdn else {}
        async with aiohttp.ClientSession() as s:
            for _key, (ref, data) in c.blobs.items():
                status, body = await _get(s, c.photo_url(ref), **headers)
                assert status == 200 and body == data, (ref, status)

    c.run(go())


def test_writes_land_on_three_replicas_and_read_through_the_router(cluster: Cluster) -> None:
    c = cluster
    rng = random.Random(3)
    base = int(time.time() * 1000) << 23

    async def go() -> None:
        async with BlobWriter(c.layout.directory_url, credentials=creds(c.secret)) as w:
            for i in range(BLOBS):
                data = rng.randbytes(rng.randrange(1, 64 * 1024))
                ref = await _put_with_retry(w, base + i, data)
                c.blobs[ref.key] = (ref, data)
        # Every acknowledged blob is on each of its volume's three replicas.
        async with aiohttp.ClientSession() as s:
            async with s.get(c.layout.directory_url + "/volumes", headers=c.admin) as r:
                lvs = {v["volume_id"]: v for v in (await r.json())["volumes"]}
            for ref, data in c.blobs.values():
                replicas = lvs[ref.volume_id]["replicas"]
                assert len({rep["node_id"] for rep in replicas}) == 3
                for rep in replicas:
                    read = creds(c.secret, "router")  # what a reader holds
                    async with StoreClient(rep["url"], credentials=read, session=s) as sc:
                        got = await sc.get(ref.volume_id, ref.key, ref.alt_key, ref.cookie)
                        assert got.data == data

    c.run(go())
    _all_reads_succeed(c, via_cdn=False)


def test_a_killed_store_node_loses_no_read_and_writes_go_on(cluster: Cluster) -> None:
    c = cluster

    async def most_replicas() -> str:
        async with (
            aiohttp.ClientSession() as s,
            s.get(c.layout.directory_url + "/volumes", headers=c.admin) as r,
        ):
            lvs = {v["volume_id"]: v for v in (await r.json())["volumes"]}
        held = Counter(
            rep["node_id"] for ref, _ in c.blobs.values() for rep in lvs[ref.volume_id]["replicas"]
        )
        return "store-2" if held["store-2"] else max(sorted(held), key=lambda n: held[n])

    c.victim = c.run(most_replicas())
    victim = c.services()[c.victim]
    os.kill(victim.pid, signal.SIGKILL)
    # Straight away, before the directory has noticed: reads fail over.
    _all_reads_succeed(c, via_cdn=True)
    _all_reads_succeed(c, via_cdn=False)
    base = (int(time.time() * 1000) + 1) << 23

    async def go() -> None:
        async with BlobWriter(c.layout.directory_url, credentials=creds(c.secret)) as w:
            for i in range(20):
                data = os.urandom(4096 + i)
                ref = await _put_with_retry(w, base + i, data)
                c.blobs[ref.key] = (ref, data)
        async with (
            aiohttp.ClientSession() as s,
            s.get(c.layout.directory_url + "/volumes", headers=c.admin) as r,
        ):
            lvs = {v["volume_id"]: v for v in (await r.json())["volumes"]}
        for ref, _ in list(c.blobs.values())[-20:]:
            assert c.victim not in {rep["node_id"] for rep in lvs[ref.volume_id]["replicas"]}

    c.run(go())
    _all_reads_succeed(c, via_cdn=True)


def test_an_added_node_and_fix_replication_restore_three_verified_replicas(
    cluster: Cluster,
) -> None:
    c = cluster
    # Add store-5 by hand: `pinhole up --stores 5` would also bring store-2 back, and here
    # store-2 stays lost.
    bigger = lc.Layout(root=c.root, port_base=c.layout.port_base, stores=5)
    lc.save_layout(bigger)
    running = lc.read_registry(c.root)
    store5 = next(s for s in bigger.services() if s.name == "store-5")
    running["store-5"] = lc.start(store5, c.root)
    lc.write_registry(c.root, running)
    c.run(lc.wait_healthy([running["store-5"]]))
    # The directory must see store-2 as down before it plans moves off it, and store-5
    # alive (its first heartbeat) to have somewhere to move them.
    _until(c, lambda doc: doc["nodes_down"] >= 1, "/status")
    _until(
        c,
        lambda doc: any(n["node_id"] == "store-5" and n["alive"] for n in doc["nodes"]),
        "/nodes",
    )
    p = pinhole(
        "volume", "fix-replication", "--directory", c.layout.directory_url,
        "--secret-file", c.layout.secret_file, "--json", cwd=REPO,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout
    report = json.loads(p.stdout)
    assert report["ok"] and report["moves"], report

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(c.layout.directory_url + "/volumes", headers=c.admin) as r:
                lvs = (await r.json())["volumes"]
            for lv in lvs:
                ready = [rep for rep in lv["replicas"] if rep["state"] == "ready" and rep["alive"]]
                assert len(ready) == 3, lv
                assert c.victim not in {rep["node_id"] for rep in lv["replicas"]}
            for ref, data in c.blobs.values():
                lv = next(v for v in lvs if v["volume_id"] == ref.volume_id)
                for rep in lv["replicas"]:
                    read = creds(c.secret, "router")  # what a reader holds
                    async with StoreClient(rep["url"], credentials=read, session=s) as sc:
                        got = await sc.get(ref.volume_id, ref.key, ref.alt_key, ref.cookie)
                        assert got.data == data

    c.run(check())
    for name, e in c.services().items():
        if e.role != "store" or name == c.victim:
            continue
        p = pinhole(
            "volume", "verify", "--all", "--node", e.url,
            "--secret-file", c.layout.secret_file, "--json", cwd=REPO,
        )  # fmt: skip
        assert p.returncode == 0, (name, p.stdout, p.stderr)
    _all_reads_succeed(c, via_cdn=True)


def test_a_flipped_byte_is_never_served_and_the_scrubber_repairs_it(cluster: Cluster) -> None:
    """Two blobs get a flipped byte in store-1's copy. The first is read through the router:
    the right bytes come back (from another replica) and the read reports the bad copy. The
    second is never read: only the scrubber can find it, and it gets repaired too."""
    c = cluster
    store1 = c.services()["store-1"]
    volumes = c.root / "store-1" / "volumes"
    on_store1 = [
        (r, d)
        for r, d in c.blobs.values()
        if len(d) >= 1024 and (volumes / f"v{r.volume_id}.dat").exists()
    ]
    (read_ref, read_data), (scrub_ref, scrub_data) = on_store1[0], on_store1[1]
    for ref, data in ((read_ref, read_data), (scrub_ref, scrub_data)):
        path = volumes / f"v{ref.volume_id}.dat"
        raw = path.read_bytes()
        at = raw.index(data[:64]) + 10
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(bytes([raw[at] ^ 0xFF]))
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

    async def store1_copy(sc: StoreClient, ref: BlobRef) -> bytes | None:
        try:
            return (await sc.get(ref.volume_id, ref.key, ref.alt_key, ref.cookie)).data
        except Exception:
            return None

    async def go() -> None:
        async with (
            aiohttp.ClientSession() as s,
            StoreClient(store1.url, credentials=creds(c.secret), session=s) as sc,
        ):
            assert await store1_copy(sc, scrub_ref) is None  # corrupt: never served
            for _ in range(5):
                status, body = await _get(s, c.photo_url(read_ref), Via="1.1 cdn")
                assert status == 200 and body == read_data
            job = await sc.scrub(scrub_ref.volume_id)
            assert job["state"] in ("running", "done")
            done = await sc.wait_job(scrub_ref.volume_id, "scrub")
            assert done["result"]["corrupt_live"] >= 1, done
            deadline = time.monotonic() + SETTLE_S_MAX
            while not (
                await store1_copy(sc, scrub_ref) == scrub_data
                and await store1_copy(sc, read_ref) == read_data
            ):
                assert time.monotonic() < deadline, "a bad copy was never repaired"
                await asyncio.sleep(0.2)

    c.run(go())


def test_the_cache_coalesces_misses_follows_admission_and_forgets_deletes(
    cluster: Cluster,
) -> None:
    c = cluster

    async def store_reads(s: aiohttp.ClientSession) -> int:
        total = 0
        for e in c.services().values():
            if e.role == "store" and lc.alive(e):
                async with s.get(e.url + "/status", headers=c.admin) as r:
                    total += (await r.json())["reads"]
        return total

    async def go() -> None:
        async with BlobWriter(c.layout.directory_url, credentials=creds(c.secret)) as w:
            data = os.urandom(50_000)
            ref = await _put_with_retry(w, (int(time.time() * 1000) + 7) << 23, data)
            async with aiohttp.ClientSession() as s:
                url = c.photo_url(ref)
                # From a CDN: served, not cached (every request reaches a store).
                before = await store_reads(s)
                for _ in range(3):
                    assert await _get(s, url, Via="1.1 cdn") == (200, data)
                assert await store_reads(s) - before == 3
                # 100 concurrent misses straight from users: one store read.
                before = await store_reads(s)
                answers = await asyncio.gather(*(_get(s, url) for _ in range(100)))
                assert all(a == (200, data) for a in answers)
                assert await store_reads(s) - before == 1
                # Now a hit: no store read at all.
                before = await store_reads(s)
                assert await _get(s, url) == (200, data)
                assert await store_reads(s) - before == 0
                # A delete makes the URL 404 everywhere, the cache included.
                await w.delete(ref.volume_id, ref.key)
                status, _ = await _get(s, url)
                assert status == 404

    c.run(go())


def _until(c: Cluster, ok: Callable[[dict[str, Any]], bool], path: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_S_MAX
        async with aiohttp.ClientSession() as s:
            while True:
                async with s.get(c.layout.directory_url + path, headers=c.admin) as r:
                    doc: dict[str, Any] = await r.json()
                if ok(doc):
                    return doc
                assert time.monotonic() < deadline, doc
                await asyncio.sleep(0.2)

    result: dict[str, Any] = c.run(go())
    return result


def test_a_returning_node_drops_the_replicas_replaced_while_it_was_away(cluster: Cluster) -> None:
    """store-2, killed at the start and replaced by fix-replication, comes back with its old
    copies: they missed the deletes made since, so the directory's releases loop deletes
    them, and a photo deleted meanwhile is gone from the node's files too."""
    c = cluster
    volumes = c.root / c.victim / "volumes"
    held = {int(p.stem[1:]) for p in volumes.glob("v*.dat")}
    assert held, f"{c.victim} held replicas when it was killed"
    ref, data = next((r, d) for r, d in c.blobs.values() if r.volume_id in held)
    copy = volumes / f"v{ref.volume_id}.dat"
    assert data in copy.read_bytes()

    async def delete() -> None:
        async with BlobWriter(c.layout.directory_url, credentials=creds(c.secret)) as w:
            await w.delete(ref.volume_id, ref.key)

    c.run(delete())
    del c.blobs[ref.key]
    layout = lc.load_layout(c.root)
    assert layout is not None
    running = lc.read_registry(c.root)
    store2 = next(s for s in layout.services() if s.name == c.victim)
    running[c.victim] = lc.start(store2, c.root)
    lc.write_registry(c.root, running)
    c.run(lc.wait_healthy([running[c.victim]]))

    deadline = time.monotonic() + 60
    while any(any(volumes.glob(f"v{vid}.*")) for vid in held):
        assert time.monotonic() < deadline, sorted(p.name for p in volumes.iterdir())
        time.sleep(0.2)
    assert not any(data in p.read_bytes() for p in (c.root / c.victim).rglob("*") if p.is_file())
    _until(
        c,
        lambda doc: doc["process"]["counters"].get("replaced_releases", 0) == len(held),
        "/status",
    )
    _all_reads_succeed(c, via_cdn=True)
