"""The cache node through its HTTP API, on real store nodes (in-process, 127.0.0.1) and a
recording stand-in for the directory."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cache.lru import ENTRY_OVERHEAD_BYTES
from common.credentials import Purpose
from replica.read import needle_etag
from tests.cache.conftest import SECRET, VID, Cache, DirectoryStub, StartCache, Store
from tests.conftest import auth

pytestmark = pytest.mark.timeout(60)

COOKIE = 0x0123456789ABCDEF


def etag_of(key: int, data: bytes, alt: int = 0) -> str:
    return needle_etag(key, alt, COOKIE, data)


async def put_all(stores: list[Store], key: int, data: bytes, alt: int = 0) -> None:
    for s in stores:
        await s.put(key, alt, COOKIE, data)


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


def urls(stores: list[Store]) -> list[str]:
    return [s.url for s in stores]


# --------------------------------------------------------------------------- stand-in peers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts an aiohttp server answering every GET with ``handler``; returns its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _authorization(request: web.Request) -> dict[str, str]:
    value = request.headers.get("Authorization")
    return {} if value is None else {"Authorization": value}


def relay_to(store: Store, gate: asyncio.Event | None = None) -> Handler:
    """A replica that waits for ``gate`` and then relays the real store's answer."""

    async def handler(request: web.Request) -> web.Response:
        if gate is not None:
            await gate.wait()
        async with (
            aiohttp.ClientSession() as http,
            # The cache's own credential, passed on: the relay is only a slow wire.
            http.get(store.url + request.path, headers=_authorization(request)) as resp,
        ):
            body = await resp.read()
            headers = {k: v for k, v in resp.headers.items() if k.lower() in ("etag",)}
            return web.Response(status=resp.status, body=body, headers=headers)

    return handler


# --------------------------------------------------------------------------- hits and misses


async def test_miss_then_hit(stores: list[Store], cache: Cache) -> None:
    data = os.urandom(30_000)
    await put_all(stores, 7, data)
    before = stores[0].gets()
    status, headers, body = await cache.get(7, 0, COOKIE, urls(stores))
    assert (status, body) == (200, data)
    assert headers["X-Pinhole-Cache"] == "miss"
    assert headers["ETag"] == etag_of(7, data)
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, body = await cache.get(7, 0, COOKIE, urls(stores))
    assert (status, body, headers["X-Pinhole-Cache"]) == (200, data, "hit")
    # A hit needs no replicas header.
    status, headers, body = await cache.get(7, 0, COOKIE, None)
    assert (status, body, headers["X-Pinhole-Cache"]) == (200, data, "hit")
    assert stores[0].gets() - before == 1
    st = cache.node.statistics()
    assert (st.hits, st.misses, st.store_reads, st.lru.items) == (2, 1, 1, 1)
    # HEAD and If-None-Match on a cached needle.
    status, headers, body = await cache.get(7, 0, COOKIE, None, method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(data)))
    async with cache.http.get(
        f"{cache.url}/c/{VID}/7/0/{COOKIE:016x}",
        headers={"If-None-Match": etag_of(7, data), **auth(SECRET, Purpose.READ)},
    ) as resp:
        assert resp.status == 304


async def test_wrong_cookie_is_not_served_from_cache(stores: list[Store], cache: Cache) -> None:
    data = os.urandom(1000)
    await put_all(stores, 8, data)
    assert (await cache.get(8, 0, COOKIE, urls(stores)))[0] == 200
    status, headers, _ = await cache.get(8, 0, COOKIE ^ 1, urls(stores))
    assert status == 404
    assert headers["X-Pinhole-Error"] == "not_found"


async def test_100_concurrent_misses_cost_one_store_read(stores: list[Store], cache: Cache) -> None:
    data = os.urandom(200_000)
    await put_all(stores, 9, data)
    before = [s.gets() for s in stores]
    answers = await asyncio.gather(*(cache.get(9, 0, COOKIE, urls(stores)) for _ in range(100)))
    assert all(status == 200 and body == data for status, _, body in answers)
    assert [s.gets() - b for s, b in zip(stores, before, strict=True)] == [1, 0, 0]
    st = cache.node.statistics()
    assert st.store_reads == 1
    assert st.coalesced + st.hits == 99


async def test_not_admitted_is_served_but_not_cached(stores: list[Store], cache: Cache) -> None:
    data = os.urandom(5000)
    await put_all(stores, 10, data)
    before = stores[0].gets()
    for _ in range(2):
        status, headers, body = await cache.get(10, 0, COOKIE, urls(stores), admit=False)
        assert (status, body, headers["X-Pinhole-Cache"]) == (200, data, "miss")
    assert stores[0].gets() - before == 2
    assert cache.node.statistics().not_admitted == 2
    assert (await cache.get(10, 0, COOKIE, urls(stores)))[1]["X-Pinhole-Cache"] == "miss"
    assert (await cache.get(10, 0, COOKIE, urls(stores), admit=False))[1][
        "X-Pinhole-Cache"
    ] == "hit"


async def test_byte_bound_evicts_least_recently_used(
    stores: list[Store], start_cache: StartCache
) -> None:
    size = 10_000
    cache = await start_cache(
        cache_bytes_max=3 * (size + ENTRY_OVERHEAD_BYTES), item_bytes_max=size
    )
    blobs = {k: os.urandom(size) for k in (1, 2, 3, 4)}
    for k, data in blobs.items():
        await put_all(stores[:1], k, data)
    big = os.urandom(size + 1)
    await put_all(stores[:1], 5, big)
    replicas = urls(stores[:1])
    for k in (1, 2, 3):
        assert (await cache.get(k, 0, COOKIE, replicas))[1]["X-Pinhole-Cache"] == "miss"
    assert (await cache.get(1, 0, COOKIE, replicas))[1]["X-Pinhole-Cache"] == "hit"  # 1 is MRU
    assert (await cache.get(4, 0, COOKIE, replicas))[1]["X-Pinhole-Cache"] == "miss"  # evicts 2
    st = cache.node.statistics().lru
    assert (st.items, st.evictions, st.data_bytes) == (3, 1, 3 * size)
    assert st.bytes <= st.bytes_max
    assert (await cache.get(2, 0, COOKIE, replicas))[1]["X-Pinhole-Cache"] == "miss"
    for k in (4, 2):
        assert (await cache.get(k, 0, COOKIE, replicas))[1]["X-Pinhole-Cache"] == "hit"
    # Over item_bytes_max: served, never cached.
    for _ in range(2):
        status, headers, body = await cache.get(5, 0, COOKIE, replicas)
        assert (status, body, headers["X-Pinhole-Cache"]) == (200, big, "miss")
    assert cache.node.statistics().lru.rejected_too_large == 2


# --------------------------------------------------------------------------- invalidation


async def test_delete_forgets_every_variant(stores: list[Store], cache: Cache) -> None:
    for alt in (0, 1, 2):
        await put_all(stores, 11, os.urandom(100 + alt), alt=alt)
        assert (await cache.get(11, alt, COOKIE, urls(stores)))[0] == 200
    assert (await cache.delete(11, authorized=False))[0] == 401
    assert await cache.delete(11) == (200, {"forgotten": 3})
    assert cache.node.statistics().lru.items == 0
    assert (await cache.get(11, 1, COOKIE, urls(stores)))[1]["X-Pinhole-Cache"] == "miss"


async def test_delete_during_flight_does_not_repopulate(
    stores: list[Store], cache: Cache, peer: Callable[[Handler], Awaitable[str]]
) -> None:
    data = os.urandom(4000)
    await put_all(stores, 12, data)
    gate = asyncio.Event()
    slow = await peer(relay_to(stores[0], gate))
    pending = asyncio.ensure_future(cache.get(12, 0, COOKIE, [slow]))
    await eventually(lambda: cache.node.statistics().fetches_inflight != 0)
    assert await cache.delete(12) == (200, {"forgotten": 0})
    # A miss after the invalidation does not join the old flight: it reads again.
    after = asyncio.ensure_future(cache.get(12, 0, COOKIE, [slow]))
    await eventually(lambda: cache.node.statistics().store_reads >= 2)
    gate.set()
    for fut in (pending, after):
        status, headers, body = await fut
        assert (status, body, headers["X-Pinhole-Cache"]) == (200, data, "miss")
    st = cache.node.statistics()
    assert st.invalidated_in_flight == 1
    assert st.lru.items == 1  # only the read that started after the DELETE was cached


async def test_inflight_fetches_max_refuses_with_503(
    stores: list[Store], start_cache: StartCache, peer: Callable[[Handler], Awaitable[str]]
) -> None:
    cache = await start_cache(inflight_fetches_max=1)
    await put_all(stores, 13, b"a")
    await put_all(stores, 14, b"b")
    gate = asyncio.Event()
    slow = await peer(relay_to(stores[0], gate))
    first = asyncio.ensure_future(cache.get(13, 0, COOKIE, [slow]))
    await eventually(lambda: cache.node.statistics().fetches_inflight != 0)
    status, headers, _ = await cache.get(14, 0, COOKIE, [slow])
    assert (status, headers["X-Pinhole-Error"], headers["Retry-After"]) == (503, "busy", "1")
    joined = asyncio.ensure_future(cache.get(13, 0, COOKIE, [slow]))  # joining is allowed
    await asyncio.sleep(0.02)
    gate.set()
    assert (await first)[2] == (await joined)[2] == b"a"


# --------------------------------------------------------------------------- replicas


async def test_failover_when_first_replica_is_stopped(stores: list[Store], cache: Cache) -> None:
    data = os.urandom(2000)
    await put_all(stores, 15, data)
    await stores[0].stop()
    status, _, body = await cache.get(15, 0, COOKIE, urls(stores))
    assert (status, body) == (200, data)
    assert stores[1].gets() >= 2  # the put, then the read


async def test_no_replica_answers_502(stores: list[Store], cache: Cache) -> None:
    await stores[0].stop()
    status, headers, body = await cache.get(16, 0, COOKIE, [stores[0].url])
    assert status == 502
    assert headers["X-Pinhole-Error"] == "replicas_unavailable"
    assert b'"code":"replicas_unavailable"' in body


async def test_absent_is_404_and_remembered(stores: list[Store], cache: Cache) -> None:
    before = [s.gets() for s in stores]
    status, headers, body = await cache.get(17, 0, COOKIE, urls(stores))
    assert (status, headers["X-Pinhole-Error"]) == (404, "not_found")
    assert b'"code":"not_found"' in body
    assert [s.gets() - b for s, b in zip(stores, before, strict=True)] == [1, 1, 1]
    assert (await cache.get(17, 0, COOKIE, urls(stores)))[0] == 404
    assert [s.gets() - b for s, b in zip(stores, before, strict=True)] == [1, 1, 1]
    assert cache.node.statistics().negative_hits == 1


async def test_missing_copy_is_reported_when_another_replica_has_it(
    stores: list[Store], cache: Cache, directory: DirectoryStub
) -> None:
    directory.replicas = urls(stores)
    data = os.urandom(3000)
    await put_all(stores[1:], 18, data, alt=5)
    status, _, body = await cache.get(18, 5, COOKIE, urls(stores))
    assert (status, body) == (200, data)
    await cache.node.drain_reports()
    assert directory.repairs == [
        {
            "volume_id": VID,
            "key": 18,
            "alt_key": 5,
            "node_id": "node-0",  # mapped from the URL through GET /volumes/{vid}
            "url": stores[0].url,
            "reason": "read",
        }
    ]


def corrupt_on_disk(store: Store, data: bytes) -> None:
    """Flips one byte of ``data`` inside the store's volume file."""
    hits = [p for p in (store.data_dir / "volumes").iterdir() if data in p.read_bytes()]
    assert len(hits) == 1, hits
    path: Path = hits[0]
    raw = bytearray(path.read_bytes())
    at = raw.index(data) + len(data) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes([raw[at] ^ 0xFF]))


async def test_corrupt_copy_is_skipped_and_reported(
    stores: list[Store], cache: Cache, directory: DirectoryStub
) -> None:
    data = os.urandom(6000)
    await put_all(stores, 19, data)
    corrupt_on_disk(stores[0], data)
    async with (  # the store itself refuses the bad copy
        aiohttp.ClientSession(headers=auth(SECRET, Purpose.READ)) as http,
        http.get(f"{stores[0].url}/n/{VID}/19/0/{COOKIE:016x}") as resp,
    ):
        assert (resp.status, resp.headers["X-Pinhole-Error"]) == (500, "corrupt_needle")
    status, headers, body = await cache.get(19, 0, COOKIE, urls(stores))
    assert (status, body, headers["ETag"]) == (200, data, etag_of(19, data))
    await cache.node.drain_reports()
    assert directory.repairs == [
        {
            "volume_id": VID,
            "key": 19,
            "alt_key": 0,
            "node_id": stores[0].url,  # the stand-in directory does not know the volume
            "url": stores[0].url,
            "reason": "read",
        }
    ]
    assert cache.node.statistics().repairs_reported == 1


async def test_etag_mismatch_is_treated_as_corrupt(
    stores: list[Store],
    cache: Cache,
    directory: DirectoryStub,
    peer: Callable[[Handler], Awaitable[str]],
) -> None:
    data = os.urandom(1500)
    await put_all(stores, 20, data)

    async def lying(request: web.Request) -> web.Response:
        bad = bytearray(data)
        bad[0] ^= 1
        return web.Response(body=bytes(bad), headers={"ETag": etag_of(20, data)})

    liar = await peer(lying)
    status, _, body = await cache.get(20, 0, COOKIE, [liar, stores[0].url])
    assert (status, body) == (200, data)
    await cache.node.drain_reports()
    assert [r["url"] for r in directory.repairs] == [liar]
    # Every replica lying: nothing is served.
    status, headers, _ = await cache.get(21, 0, COOKIE, [liar])
    assert (status, headers["X-Pinhole-Error"]) == (502, "replicas_unavailable")


# --------------------------------------------------------------------------- the rest


async def test_replica_lists_are_taken_only_with_the_read_credential(
    stores: list[Store], cache: Cache, peer: Callable[[Handler], Awaitable[str]]
) -> None:
    data = os.urandom(3000)
    await put_all(stores, 40, data)
    fetched: list[str] = []

    async def forged(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=b"not the photo", headers={"ETag": etag_of(40, b"x")})

    evil = await peer(forged)
    for headers in ({}, auth(SECRET, Purpose.WRITE), {"Authorization": "Pinhole-Internal x"}):
        status, got, body = await cache.get(40, 0, COOKIE, [evil], authorized=False)
        async with cache.http.get(
            f"{cache.url}/c/{VID}/40/0/{COOKIE:016x}",
            headers={**headers, "X-Pinhole-Replicas": evil},
        ) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
        assert status == 401 and got["X-Pinhole-Error"] == "unauthorized"
    assert fetched == [] and cache.node.statistics().lru.items == 0
    # With the credential the listed replica is asked; a body not matching its ETag is
    # refused, never cached, and the real photo is still served from a real replica.
    status, _, body = await cache.get(40, 0, COOKIE, [evil, *urls(stores)])
    assert (status, body) == (200, data) and fetched == [f"/n/{VID}/40/0/{COOKIE:016x}"]


async def test_bad_requests(cache: Cache) -> None:
    read = auth(SECRET, Purpose.READ)
    async with cache.http.get(f"{cache.url}/c/1/2/3/XYZ", headers=read) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad_path"
    async with cache.http.get(f"{cache.url}/c/01/2/3/{COOKIE:016x}", headers=read) as resp:
        assert resp.status == 400
    async with cache.http.get(f"{cache.url}/c/1/2/3/{COOKIE:016x}", headers=read) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "no_replicas"
    status, _, _ = await cache.get(1, 2, COOKIE, ["ftp://x"])
    assert status == 400
    status, _, _ = await cache.get(1, 2, COOKIE, [f"http://h{i}" for i in range(17)])
    assert status == 400
    async with cache.http.post(f"{cache.url}/c/1/2/3/{COOKIE:016x}") as resp:
        assert resp.status == 405
    async with cache.http.get(f"{cache.url}/nothing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_status_metrics_and_heartbeat(
    stores: list[Store], cache: Cache, directory: DirectoryStub
) -> None:
    await put_all(stores, 22, b"x" * 10)
    await cache.get(22, 0, COOKIE, urls(stores))
    async with cache.http.get(f"{cache.url}/healthz") as resp:
        assert (await resp.json())["ok"] is True
    async with cache.http.get(f"{cache.url}/status") as resp:
        assert resp.status == 401
    async with cache.http.get(f"{cache.url}/status", headers=auth(SECRET, Purpose.ADMIN)) as resp:
        st = await resp.json()
        assert (st["misses"], st["lru"]["items"]) == (1, 1)
    async with cache.http.get(
        f"{cache.url}/metrics", headers=auth(SECRET, Purpose.METRICS)
    ) as resp:
        text = await resp.text()
        assert "pinhole_cache_misses_total" in text
        assert "pinhole_cache_lru_bytes" in text
    for _ in range(200):
        if directory.heartbeats:
            break
        await asyncio.sleep(0.01)
    beat = directory.heartbeats[0]
    assert beat == {
        "node_id": f"cache-127.0.0.1:{cache.server.port}",
        "role": "cache",
        "url": cache.url,
        "failure_domain": "",
        "free_bytes": 0,
        "volumes": [],
    }
    assert directory.unauthorized == 0


async def test_directory_down_is_tolerated(stores: list[Store], start_cache: StartCache) -> None:
    cache = await start_cache(directory_url="http://127.0.0.1:9", heartbeat_interval_s=0.02)
    data = os.urandom(100)
    await put_all(stores[1:], 23, data)
    await asyncio.sleep(0.1)  # a few failed heartbeats
    status, _, body = await cache.get(23, 0, COOKIE, urls(stores))  # and a failed report
    assert (status, body) == (200, data)
    await cache.node.drain_reports()
    assert cache.node.statistics().bad_replicas_found == 1


async def test_large_needle_is_verified_off_the_loop(stores: list[Store], cache: Cache) -> None:
    data = os.urandom(3 * 1024 * 1024)  # over ETAG_INLINE_BYTES_MAX: hashed in a thread
    # (Written with the lean client: aiohttp warns about large raw-bytes bodies.)
    resp = await cache.node.client.request(
        "PUT",
        f"{stores[0].url}/n/{VID}/24/0/{COOKIE:016x}",
        headers=list(auth(SECRET, Purpose.WRITE).items()),
        body=data,
    )
    assert resp.status == 201
    status, headers, body = await cache.get(24, 0, COOKIE, urls(stores[:1]))
    assert (status, body, headers["ETag"]) == (200, data, etag_of(24, data))
    assert (await cache.get(24, 0, COOKIE, None))[1]["X-Pinhole-Cache"] == "hit"
