"""The store endpoints replicas are repaired and moved with, through real nodes on loopback:
internal read, repair PUT, DELETE /volumes/{id}, the volume file export and pull."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from store.client import StoreClient, StoreClientError, needle_path
from store.node import StoreNode
from store.server import running_node
from store.superblock import SUPERBLOCK_BYTES
from store.volume import data_name
from store.volume_config import VolumeLimits
from store.volume_pull import DAT_READ_BYTES_MAX, pull_data_name, pull_sidecar_name
from store.volume_state import Reason, read_only
from tests.conftest import creds
from tests.store.cluster import COOKIE, NODE, READ, SECRET, WRITE, eventually, node_config, wait_job


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[StoreNode, str]]:
    async with running_node(
        node_config(tmp_path / "a"), credentials=creds(SECRET, "store"), create_volumes=[1]
    ) as (
        n,
        server,
    ):
        yield n, f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def client(node: tuple[StoreNode, str]) -> AsyncIterator[StoreClient]:
    async with StoreClient(node[1], credentials=creds(SECRET)) as c:
        yield c


def _blob(key: int, size: int = 3000) -> bytes:
    return (key.to_bytes(8, "little") * (size // 8 + 1))[:size]


# -- internal read ------------------------------------------------------------------------------


async def test_internal_read_needs_the_credential_and_answers_the_cookie(
    node: tuple[StoreNode, str], client: StoreClient, http: aiohttp.ClientSession
) -> None:
    _, url = node
    put = await client.put(1, 42, 3, COOKIE, b"bytes of a photo")
    async with http.get(url + "/n/1/42/3") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"
    async with http.get(url + "/n/1/42/3", headers=READ) as r:
        assert r.status == 200
        assert await r.read() == b"bytes of a photo"
        assert r.headers["X-Pinhole-Cookie"] == f"{COOKIE:016x}"
        assert r.headers["ETag"] == put["etag"]
        assert r.headers["Cache-Control"] == "no-store"
    got = await client.internal_read(1, 42, 3)
    assert (got.data, got.cookie, got.etag) == (b"bytes of a photo", COOKIE, put["etag"])
    for path in ("/n/1/42/4", "/n/1/43/3"):  # absent variant, absent key
        async with http.get(url + path, headers=READ) as r:
            assert r.status == 404
    async with http.get(url + "/n/9/42/3", headers=READ) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "volume_not_found"
    await client.delete(1, 42, 3)
    with pytest.raises(StoreClientError) as e:
        await client.internal_read(1, 42, 3)
    assert e.value.status == 404


async def test_internal_read_never_serves_corrupt_bytes(
    node: tuple[StoreNode, str], client: StoreClient
) -> None:
    n, _ = node
    result = await n.put(1, 5, 0, COOKIE, _blob(5))
    _flip_byte(n, 1, result.offset + 40)
    with pytest.raises(StoreClientError) as e:
        await client.internal_read(1, 5, 0)
    assert (e.value.status, e.value.code) == (500, "corrupt_needle")


def _flip_byte(n: StoreNode, vid: int, offset: int) -> None:
    path = os.path.join(n.storage.root, data_name(vid))
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0x10]), offset)
    finally:
        os.close(fd)


# -- repair PUT ---------------------------------------------------------------------------------


async def test_repair_put_is_taken_by_read_only_volumes_full_or_by_operator(
    node: tuple[StoreNode, str], client: StoreClient
) -> None:
    await client.put(1, 1, 0, COOKIE, b"first")
    await client.set_mode(1, "read_only")
    with pytest.raises(StoreClientError) as e:
        await client.put(1, 2, 0, COOKIE, b"plain write")
    assert (e.value.status, e.value.code) == (409, "volume_not_writable")
    await client.put(1, 2, 0, COOKIE, b"repair write", repair=True)
    assert (await client.get(1, 2, 0, COOKIE)).data == b"repair write"
    assert (await client.volume(1))["mode"] == "read_only"


async def test_repair_put_goes_past_the_size_limit_of_a_full_volume(tmp_path: Path) -> None:
    limits = VolumeLimits(size_bytes_max=16 * 1024, needle_data_bytes_max=8 * 1024)
    config = node_config(tmp_path / "n", volume=limits)
    async with running_node(config, credentials=creds(SECRET, "store"), create_volumes=[1]) as (
        _,
        server,
    ):
        c = StoreClient(f"http://127.0.0.1:{server.port}", credentials=creds(SECRET))
        async with c:
            key = 0
            with pytest.raises(StoreClientError) as e:
                while True:
                    key += 1
                    await c.put(1, key, 0, COOKIE, _blob(key, 4000))
            assert e.value.code == "volume_full"
            st = await c.volume(1)
            assert (st["mode"], st["reason"]) == ("read_only", "full")
            await c.put(1, 1, 0, COOKIE, _blob(1, 4000), repair=True)
            assert (await c.volume(1))["size_bytes"] > limits.size_bytes_max
            assert (await c.get(1, 1, 0, COOKIE)).data == _blob(1, 4000)


async def test_repair_put_is_refused_by_sealed_and_io_error_volumes(
    node: tuple[StoreNode, str], client: StoreClient
) -> None:
    n, _ = node
    await client.create_volume(2)
    await client.set_mode(1, "sealed")
    with pytest.raises(StoreClientError) as e:
        await client.put(1, 2, 0, COOKIE, b"x", repair=True)
    assert (e.value.status, e.value.code) == (409, "volume_not_writable")
    await asyncio.wrap_future(n.volume(2).change_state(read_only(Reason.IO_ERROR, "test")))
    with pytest.raises(StoreClientError) as e:
        await client.put(2, 2, 0, COOKIE, b"x", repair=True)
    assert (e.value.status, e.value.code) == (409, "volume_not_writable")


async def test_bad_repair_header_is_a_400(
    node: tuple[StoreNode, str], http: aiohttp.ClientSession
) -> None:
    _, url = node
    headers = {**WRITE, "X-Pinhole-Repair": "yes"}
    async with http.put(url + needle_path(1, 1, 0, COOKIE), data=b"x", headers=headers) as r:
        assert r.status == 400


# -- DELETE /volumes/{id} -----------------------------------------------------------------------


async def test_delete_volume_removes_its_files(
    node: tuple[StoreNode, str], client: StoreClient, http: aiohttp.ClientSession
) -> None:
    n, url = node
    await client.put(1, 1, 0, COOKIE, b"gone soon")
    async with http.delete(url + "/volumes/1") as r:
        assert r.status == 401
    assert await client.delete_volume(1) == {"volume_id": 1, "deleted": True}
    assert not [f for f in os.listdir(n.storage.root) if f.startswith("v1.")]
    with pytest.raises(StoreClientError) as e:
        await client.volume(1)
    assert e.value.status == 404
    with pytest.raises(StoreClientError) as e:
        await client.delete_volume(1)
    assert e.value.status == 404
    await client.create_volume(1)  # a fresh, empty volume of the same id
    assert (await client.volume(1))["needles_live"] == 0


# -- GET /volumes/{id}/dat ----------------------------------------------------------------------


async def test_dat_export_ranges_and_limits(
    node: tuple[StoreNode, str], client: StoreClient, http: aiohttp.ClientSession
) -> None:
    n, url = node
    for key in range(1, 6):
        await client.put(1, key, 0, COOKIE, _blob(key))
    end = n.volume(1).end
    whole = await asyncio.to_thread((Path(n.storage.root) / data_name(1)).read_bytes)
    assert len(whole) == end
    async with http.get(url + "/volumes/1/dat?offset=0&length=64") as r:
        assert r.status == 401
    chunk = await client.read_dat(1, 0, SUPERBLOCK_BYTES)
    assert (chunk.data, chunk.volume_end, chunk.compaction_revision) == (whole[:64], end, 0)
    chunk = await client.read_dat(1, end - 100, 1000)  # cut at the durable end
    assert chunk.data == whole[-100:]
    assert (await client.read_dat(1, end, 1000)).data == b""
    assert (await client.read_dat(1, 100, 0)).data == b""
    with pytest.raises(StoreClientError) as e:
        await client.read_dat(1, end + 1, 10)
    assert (e.value.status, e.value.code) == (416, "offset_past_end")
    with pytest.raises(StoreClientError) as e:
        await client.read_dat(1, 0, DAT_READ_BYTES_MAX + 1)
    assert (e.value.status, e.value.code) == (400, "length_too_large")
    for query in ("offset=-1&length=5", "offset=01&length=5", "offset=x"):
        async with http.get(url + "/volumes/1/dat?" + query, headers=NODE) as r:
            assert r.status == 400, query
    async with http.get(url + "/volumes/7/dat?offset=0&length=5", headers=NODE) as r:
        assert r.status == 404
    # The revision follows compaction.
    await client.delete(1, 1)
    await client.start_job(1, "compact")
    assert (await wait_job(client, 1, "compact"))["state"] == "done"
    assert (await client.read_dat(1, 0, 64)).compaction_revision == 1


async def _pulled_more_than(client: StoreClient, fraction: float) -> bool:
    return float((await client.job(1, "pull"))["progress"]) > fraction


# -- pull ---------------------------------------------------------------------------------------


async def _fill(client: StoreClient, keys: range, size: int = 3000) -> None:
    for key in keys:
        await client.put(1, key, 0, COOKIE, _blob(key, size))
        await client.put(1, key, 1, COOKIE, _blob(key + 1000, size // 3))


async def test_pull_copies_a_volume_that_verifies_and_serves_the_same_needles(
    tmp_path: Path,
) -> None:
    async with (
        running_node(
            node_config(tmp_path / "a"), credentials=creds(SECRET, "store"), create_volumes=[1]
        ) as (a, sa),
        running_node(node_config(tmp_path / "b"), credentials=creds(SECRET, "store")) as (b, sb),
    ):
        url_a, url_b = f"http://127.0.0.1:{sa.port}", f"http://127.0.0.1:{sb.port}"
        async with (
            StoreClient(url_a, credentials=creds(SECRET)) as ca,
            StoreClient(url_b, credentials=creds(SECRET)) as cb,
        ):
            await _fill(ca, range(1, 40))
            await ca.delete(1, 7)
            job = await cb.start_pull(1, url_a)
            assert job["kind"] == "pull"
            done = await wait_job(cb, 1, "pull")
            assert done["state"] == "done", done
            result = done["result"]
            assert result["bytes_total"] == a.volume(1).end == result["bytes_copied"]
            assert result["needles_live"] == a.volume(1).needles_live == 2 * 38
            for key in range(1, 40):
                for alt in (0, 1):
                    if key == 7:
                        with pytest.raises(StoreClientError):
                            await cb.get(1, key, alt, COOKIE)
                        continue
                    want = (await ca.get(1, key, alt, COOKIE)).data
                    assert (await cb.get(1, key, alt, COOKIE)).data == want
            await cb.start_job(1, "verify")
            verified = await wait_job(cb, 1, "verify")
            assert verified["result"]["ok"], verified
            assert not [f for f in os.listdir(b.storage.root) if ".pull" in f]
            # The copy is a volume like any other: it takes writes.
            await cb.put(1, 100, 0, COOKIE, b"new")
            # A second pull onto a node holding the volume is a conflict.
            with pytest.raises(StoreClientError) as e:
                await cb.start_pull(1, url_a)
            assert (e.value.status, e.value.code) == (409, "volume_exists")
            # A source without the volume fails the job, leaving no volume behind.
            await cb.start_pull(5, url_a)
            failed = await wait_job(cb, 5, "pull")
            assert failed["state"] == "failed" and "volume_not_found" in failed["error"]
            assert 5 not in b.volumes
            async with StoreClient(url_b) as anonymous:
                with pytest.raises(StoreClientError) as e:
                    await anonymous.start_pull(2, url_a)
                assert e.value.status == 401


async def test_bad_pull_requests(node: tuple[StoreNode, str], client: StoreClient) -> None:
    for body_source, rate in (("", None), ("ftp://x", None), ("http://127.0.0.1:1", -1)):
        with pytest.raises(StoreClientError) as e:
            await client._json(
                "POST",
                "/volumes/3/pull",
                json={"source": body_source, "bytes_per_s_max": rate},
                expect=(202,),
            )
        assert e.value.status == 400


async def test_an_interrupted_pull_resumes_from_its_temp_file(tmp_path: Path) -> None:
    async with running_node(
        node_config(tmp_path / "a"), credentials=creds(SECRET, "store"), create_volumes=[1]
    ) as (
        a,
        sa,
    ):
        url_a = f"http://127.0.0.1:{sa.port}"
        async with StoreClient(url_a, credentials=creds(SECRET)) as ca:
            await _fill(ca, range(1, 120), size=4000)  # about 650 KB
        total = a.volume(1).end
        # A slow pull, stopped with its node part way.
        async with running_node(
            node_config(tmp_path / "b"), credentials=creds(SECRET, "store")
        ) as (b, sb):
            cb = StoreClient(f"http://127.0.0.1:{sb.port}", credentials=creds(SECRET))
            async with cb:
                await cb.start_pull(1, url_a, bytes_per_s_max=1_000_000)
                await eventually(lambda: _pulled_more_than(cb, 0.2))
        job = b.jobs[(1, "pull")]
        assert (job.state, job.error) == ("failed", "cancelled")
        names = sorted(os.listdir(b.storage.root))
        assert pull_data_name(1) in names and pull_sidecar_name(1) in names
        assert data_name(1) not in names
        kept = (Path(b.storage.root) / pull_data_name(1)).stat().st_size
        assert 0 < kept < total
        # The node starts with the temp files and no volume; a new pull resumes them.
        async with running_node(
            node_config(tmp_path / "b"), credentials=creds(SECRET, "store")
        ) as (b2, sb2):
            assert 1 not in b2.volumes
            async with StoreClient(f"http://127.0.0.1:{sb2.port}", credentials=creds(SECRET)) as cb:
                await cb.start_pull(1, url_a)
                done = await wait_job(cb, 1, "pull")
                assert done["state"] == "done", done
                result = done["result"]
                assert result["resumed_from"] == kept and result["restarts"] == 0
                assert result["bytes_copied"] == total - kept
                assert b2.volume(1).needles_live == a.volume(1).needles_live
                data = (await cb.get(1, 119, 0, COOKIE)).data
                assert data == _blob(119, 4000)


async def test_a_pull_starts_over_when_the_source_was_compacted(tmp_path: Path) -> None:
    async with (
        running_node(
            node_config(tmp_path / "a"), credentials=creds(SECRET, "store"), create_volumes=[1]
        ) as (a, sa),
        running_node(node_config(tmp_path / "b"), credentials=creds(SECRET, "store")) as (b, sb),
    ):
        url_a = f"http://127.0.0.1:{sa.port}"
        async with (
            StoreClient(url_a, credentials=creds(SECRET)) as ca,
            StoreClient(f"http://127.0.0.1:{sb.port}", credentials=creds(SECRET)) as cb,
        ):
            await _fill(ca, range(1, 120), size=4000)
            await cb.start_pull(1, url_a, bytes_per_s_max=1_000_000)
            await eventually(lambda: _pulled_more_than(cb, 0.2))
            await ca.delete(1, 1)
            await ca.start_job(1, "compact")
            assert (await wait_job(ca, 1, "compact"))["state"] == "done"
            done = await wait_job(cb, 1, "pull")
            assert done["state"] == "done", done
            assert done["result"]["restarts"] == 1
            assert done["result"]["compaction_revision"] == 1
            assert b.volume(1).needles_live == a.volume(1).needles_live
            assert (await cb.get(1, 2, 1, COOKIE)).data == _blob(1002, 4000 // 3)


async def test_delete_volume_abandons_a_pull_and_its_temp_files(tmp_path: Path) -> None:
    async with (
        running_node(
            node_config(tmp_path / "a"), credentials=creds(SECRET, "store"), create_volumes=[1]
        ) as (_, sa),
        running_node(node_config(tmp_path / "b"), credentials=creds(SECRET, "store")) as (b, sb),
    ):
        url_a = f"http://127.0.0.1:{sa.port}"
        async with (
            StoreClient(url_a, credentials=creds(SECRET)) as ca,
            StoreClient(f"http://127.0.0.1:{sb.port}", credentials=creds(SECRET)) as cb,
        ):
            await _fill(ca, range(1, 60), size=4000)
            await cb.start_pull(1, url_a, bytes_per_s_max=500_000)
            await eventually(lambda: _pulled_more_than(cb, 0))
            await cb.delete_volume(1)
            assert (await cb.job(1, "pull"))["state"] == "failed"
            assert not [f for f in os.listdir(b.storage.root) if f.startswith("v1.")]
