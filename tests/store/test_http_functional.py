"""The store node's HTTP API through a real server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import xxhash

from bench.peers.pagecache import evict
from common.credentials import Purpose
from store.client import StoreClient, StoreClientError, needle_path
from store.config import StoreConfig
from store.node import StoreNode
from store.server import running_node
from store.volume import data_name
from store.volume_config import VolumeLimits
from tests.conftest import auth, creds

SECRET = b"test-secret-0123456789abcdef"
WRITE = auth(SECRET, Purpose.WRITE)
READ = auth(SECRET, Purpose.READ)
ADMIN = auth(SECRET, Purpose.ADMIN)
NODE_ = auth(SECRET, Purpose.NODE)
COOKIE = 0x1234ABCD5678EF90


@pytest.fixture(params=[True, False], ids=["native", "python"])
async def node(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[StoreNode, str]]:
    """A node on loopback; every test runs twice, with the C hot read and without."""
    config = StoreConfig(
        data_dir=tmp_path / "node",
        port=0,
        compaction_check_interval_s=0,
        volume=VolumeLimits(size_bytes_max=64 * 1024 * 1024, needle_data_bytes_max=1024 * 1024),
        native=request.param,
    )
    async with running_node(config, credentials=creds(SECRET, "store"), create_volumes=[1]) as (
        n,
        server,
    ):
        # The native run must really take the C path: a missing build fails here.
        assert (n.read_path.hot_read is not None) == request.param, "store/native not built"
        yield n, f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Reads carry the read credential, as the cache's and the router's do; other calls
    name theirs."""
    async with aiohttp.ClientSession(headers=READ) as s:
        yield s


async def _put(http: aiohttp.ClientSession, url: str, key: int, data: bytes, alt: int = 0) -> None:
    async with http.put(url + needle_path(1, key, alt, COOKIE), data=data, headers=WRITE) as r:
        assert r.status == 201, await r.text()


async def test_get_serves_bytes_with_immutable_caching_headers(
    node: tuple[StoreNode, str], http: aiohttp.ClientSession
) -> None:
    _, url = node
    await _put(http, url, 42, b"photo-bytes" * 100)
    async with http.get(url + needle_path(1, 42, 0, COOKIE)) as r:
        assert r.status == 200
        assert await r.read() == b"photo-bytes" * 100
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert r.headers["Accept-Ranges"] == "bytes"
        etag = r.headers["ETag"]
        assert etag.startswith('"') and len(etag) == 18
    async with http.head(url + needle_path(1, 42, 0, COOKIE)) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(1100)
        assert await r.read() == b""
    async with http.get(url + needle_path(1, 42, 0, COOKIE), headers={"If-None-Match": etag}) as r:
        assert r.status == 304
        assert await r.read() == b""


async def test_ranges(node: tuple[StoreNode, str], http: aiohttp.ClientSession) -> None:
    _, url = node
    data = bytes(range(256)) * 4
    await _put(http, url, 7, data)
    path = url + needle_path(1, 7, 0, COOKIE)
    cases = [
        ("bytes=0-9", 206, data[:10]),
        ("bytes=1000-", 206, data[1000:]),
        ("bytes=-5", 206, data[-5:]),
    ]
    for header, status, want in cases:
        async with http.get(path, headers={"Range": header}) as r:
            assert r.status == status
            assert await r.read() == want
            assert r.headers["Content-Range"].endswith(f"/{len(data)}")
    async with http.get(path, headers={"Range": "bytes=5000-6000"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    async with http.get(path, headers={"Range": "bytes=0-1,5-6"}) as r:
        assert r.status == 200  # multiple ranges: the whole needle
        assert await r.read() == data
    async with http.get(path, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}) as r:
        assert r.status == 200


async def test_wrong_cookie_is_exactly_like_absent(
    node: tuple[StoreNode, str], http: aiohttp.ClientSession
) -> None:
    _, url = node
    await _put(http, url, 9, b"secret")
    async with http.get(url + needle_path(1, 9, 0, COOKIE + 1)) as wrong:
        wrong_body, wrong_status, wrong_headers = await wrong.read(), wrong.status, wrong.headers
    async with http.get(url + needle_path(1, 10, 0, COOKIE)) as absent:
        absent_body, absent_status, absent_headers = (
            await absent.read(),
            absent.status,
            absent.headers,
        )
    assert wrong_status == absent_status == 404
    assert wrong_body == absent_body
    assert set(wrong_headers) - {"Date"} == set(absent_headers) - {"Date"}


async def test_each_route_takes_the_credential_of_its_purpose(
    node: tuple[StoreNode, str], http: aiohttp.ClientSession
) -> None:
    _, url = node
    await _put(http, url, 7, b"seven")
    path = url + needle_path(1, 7, 0, COOKIE)
    anonymous = {"Authorization": ""}
    for headers, status in [
        (anonymous, 401),  # a cookie alone reads nothing here
        (WRITE, 401),
        (auth(SECRET, Purpose.NODE), 401),
        (READ, 200),
    ]:
        async with http.get(path, headers=headers) as r:
            assert r.status == status, headers
    async with http.get(url + "/n/1/7/0", headers=READ) as r:  # without the cookie
        assert r.status == 200 and r.headers["X-Pinhole-Cookie"] == f"{COOKIE:016x}"
    async with http.put(path, data=b"x", headers=READ) as r:
        assert r.status == 401  # reading is not writing
    async with http.get(url + "/volumes/1/dat?offset=0&length=64", headers=WRITE) as r:
        assert r.status == 401
    async with http.get(url + "/volumes/1/dat?offset=0&length=64", headers=NODE_) as r:
        assert r.status == 200
    async with http.post(url + "/volumes/1/verify", headers=WRITE) as r:
        assert r.status == 401
    async with http.get(url + "/healthz", headers=anonymous) as r:
        assert r.status == 200 and await r.json() == {"ok": True, "volumes": 1}


async def test_writes_need_the_credential_and_valid_paths(
    node: tuple[StoreNode, str], http: aiohttp.ClientSession
) -> None:
    _, url = node
    path = url + needle_path(1, 5, 0, COOKIE)
    async with http.put(path, data=b"x") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"
    bad = {"Authorization": "Pinhole-Internal " + "0" * 64}
    async with http.put(path, data=b"x", headers=bad) as r:
        assert r.status == 401
    async with http.delete(url + "/n/1/5", headers=bad) as r:
        assert r.status == 401
    for p in [
        "/n/1/5/0",
        "/n/1/05/0/" + f"{COOKIE:016x}",
        "/n/1/5/0/ABCD",
        "/n/x/5/0/" + f"{COOKIE:016x}",
    ]:
        async with http.put(url + p, data=b"x", headers=WRITE) as r:
            assert r.status in (400, 404), p
            assert "error" in await r.json()
    async with http.put(url + needle_path(99, 5, 0, COOKIE), data=b"x", headers=WRITE) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "volume_not_found"
    async with http.get(url + needle_path(1, 5, 0, COOKIE)) as r:
        assert r.status == 404  # nothing was written by the refused requests


async def test_oversized_body_is_refused_before_it_is_read(node: tuple[StoreNode, str]) -> None:
    _, url = node
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT {needle_path(1, 5, 0, COOKIE)} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {2 * 1024 * 1024}\r\n"
        f"Authorization: {WRITE['Authorization']}\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 413")
    writer.close()


async def test_checksum_mismatch_stores_nothing(
    node: tuple[StoreNode, str], http: aiohttp.ClientSession
) -> None:
    _, url = node
    path = url + needle_path(1, 11, 0, COOKIE)
    headers = {**WRITE, "X-Pinhole-Checksum": f"{xxhash.xxh3_64_intdigest(b'other'):016x}"}
    async with http.put(path, data=b"mine", headers=headers) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "checksum_mismatch"
    async with http.get(path) as r:
        assert r.status == 404


async def test_delete_then_404_everywhere(node: tuple[StoreNode, str]) -> None:
    _, url = node
    async with StoreClient(url, credentials=creds(SECRET)) as c:
        await c.put(1, 20, 0, COOKIE, b"a")
        await c.put(1, 20, 1, COOKIE, b"b")
        assert await c.delete(1, 20, 1) == 1
        with pytest.raises(StoreClientError) as e:
            await c.get(1, 20, 1, COOKIE)
        assert e.value.status == 404
        assert await c.delete(1, 20) == 1
        with pytest.raises(StoreClientError) as e:
            await c.delete(1, 20)
        assert e.value.status == 404


async def test_corrupt_bytes_are_a_distinct_error_and_never_served(
    node: tuple[StoreNode, str],
) -> None:
    n, url = node
    async with StoreClient(url, credentials=creds(SECRET)) as c:
        await c.put(1, 30, 0, COOKIE, b"precious" * 50)
        r = await c.put(1, 31, 0, COOKIE, b"fine")
        assert r["size"] == 4
    vol = n.volume(1)
    offset = vol.generation.map.get(30, 0)[0] * 32  # type: ignore[index]
    path = Path(vol.storage.root) / data_name(1)
    raw = bytearray(path.read_bytes())
    raw[offset + 40] ^= 0x04
    path.write_bytes(raw)
    async with aiohttp.ClientSession(headers=READ) as http:
        async with http.get(url + needle_path(1, 30, 0, COOKIE)) as resp:
            assert resp.status == 500
            body = await resp.read()
            assert b"precious" not in body
            assert resp.headers["X-Pinhole-Error"] == "corrupt_needle"
        async with http.get(url + needle_path(1, 31, 0, COOKIE)) as resp:
            assert await resp.read() == b"fine"
    assert n.statistics().reads_corrupt == 1


async def test_page_cache_misses_are_read_from_the_device(
    node: tuple[StoreNode, str], http: aiohttp.ClientSession
) -> None:
    n, url = node
    await _put(http, url, 40, b"cold" * 1000)
    assert evict(n.config.volumes_dir / "v1.dat"), "the kernel kept the volume's pages cached"
    before = n.statistics().reads_from_disk
    async with http.get(url + needle_path(1, 40, 0, COOKIE)) as r:
        assert await r.read() == b"cold" * 1000
    assert n.statistics().reads_from_disk == before + 1
    async with http.get(url + needle_path(1, 40, 0, COOKIE)) as r:
        assert await r.read() == b"cold" * 1000
    assert n.statistics().reads_from_disk == before + 1  # now cached: served in the loop


async def test_admin_volume_lifecycle_and_jobs(node: tuple[StoreNode, str]) -> None:
    _, url = node
    async with StoreClient(url, credentials=creds(SECRET)) as c:
        created = await c.create_volume(2)
        assert created["volume_id"] == 2 and created["mode"] == "writable"
        with pytest.raises(StoreClientError) as e:
            await c.create_volume(2)
        assert e.value.status == 409
        for k in range(50):
            await c.put(2, k, 0, COOKIE, b"z" * 2000)
        for k in range(0, 50, 2):
            await c.delete(2, k)
        assert (await c.volume(2))["garbage_ratio"] > 0.4
        await c.start_job(2, "compact")
        job = await _wait_job(c, 2, "compact")
        assert job["state"] == "done" and job["result"]["size_after"] < job["result"]["size_before"]
        await c.start_job(2, "verify")
        job = await _wait_job(c, 2, "verify")
        assert job["result"]["ok"] and job["result"]["live_checked"] == 25
        assert (await c.set_mode(2, "read_only"))["mode"] == "read_only"
        with pytest.raises(StoreClientError) as e:
            await c.put(2, 100, 0, COOKIE, b"no")
        assert e.value.status == 409 and e.value.code == "volume_not_writable"
        assert (await c.set_mode(2, "sealed"))["mode"] == "sealed"
        with pytest.raises(StoreClientError) as e:
            await c.set_mode(2, "writable")
        assert e.value.status == 400
        vols = await c.volumes()
        assert sorted(v["volume_id"] for v in vols) == [1, 2]
    unauth = StoreClient(url)
    async with unauth:
        with pytest.raises(StoreClientError) as e:
            await unauth.create_volume(3)
        assert e.value.status == 401


async def _wait_job(c: StoreClient, vid: int, kind: str) -> dict[str, object]:
    for _ in range(200):
        job = await c.job(vid, kind)
        if job["state"] != "running":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("job did not finish")


async def test_status_and_metrics(node: tuple[StoreNode, str], http: aiohttp.ClientSession) -> None:
    n, url = node
    await _put(http, url, 1, b"m" * 10)
    async with http.get(url + needle_path(1, 1, 0, COOKIE)) as r:
        await r.read()
    async with http.get(url + "/status") as r:
        assert r.status == 401  # the node's status is for operators
    async with http.get(url + "/status", headers=ADMIN) as r:
        doc = await r.json()
        assert doc["node_id"] == n.node_id == url.removeprefix("http://")  # the bound port
        assert doc["reads"] == 1
        assert doc["volumes"][0]["needles_live"] == 1
    async with http.get(url + "/metrics") as r:
        assert r.status == 401
    async with http.get(url + "/metrics", headers=auth(SECRET, Purpose.METRICS)) as r:
        text = await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
    assert 'pinhole_store_reads_total{node="' in text
    node_label = url.removeprefix("http://")
    assert f'pinhole_store_volume_needles_live{{node="{node_label}",volume="1"}} 1.0' in text


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        StoreConfig(read_queue_depth=0)
    with pytest.raises(ValueError):
        replace(StoreConfig(), compaction_garbage_ratio_min=2.0)
