"""The router through real cache nodes (cache/server.py) over real store nodes: hits,
admission, negotiation, and failover when a cache node dies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cache.config import CacheConfig
from cache.node import CacheNode as CacheNodeService
from cache.server import running_cache
from common.photo import Format
from tests.conftest import creds
from tests.router.conftest import SECRET, Cluster, cluster_of

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


class Caches:
    def __init__(self) -> None:
        self.nodes: dict[str, CacheNodeService] = {}
        self.urls: dict[str, str] = {}
        self.stacks: dict[str, contextlib.AsyncExitStack] = {}

    async def start(self, node_id: str) -> str:
        stack = contextlib.AsyncExitStack()
        config = CacheConfig(port=0, node_id=node_id, fetch_timeout_s=1.0, negative_ttl_s=0.0)
        node, server = await stack.enter_async_context(
            running_cache(config, credentials=creds(SECRET, "cache"))
        )
        self.nodes[node_id] = node
        self.urls[node_id] = f"http://127.0.0.1:{server.port}"
        self.stacks[node_id] = stack
        return self.urls[node_id]

    async def stop(self, node_id: str) -> None:
        await self.stacks[node_id].aclose()

    async def close(self) -> None:
        for stack in self.stacks.values():
            await stack.aclose()


@contextlib.asynccontextmanager
async def with_caches(tmp_path: Path, *node_ids: str) -> AsyncIterator[tuple[Cluster, Caches]]:
    caches = Caches()
    try:
        async with cluster_of(tmp_path) as c:
            for node_id in node_ids:
                await caches.start(node_id)
            c.directory.caches = [{"node_id": n, "url": caches.urls[n]} for n in node_ids]
            await c.api.directory.refresh_caches()
            yield c, caches
    finally:
        await caches.close()


async def _get(c: Cluster, url: str, **headers: str) -> tuple[int, str, bytes]:
    async with c.http.get(url, headers=headers) as r:
        return r.status, r.headers.get("X-Pinhole-Cache", ""), await r.read()


async def test_second_view_is_a_cache_hit(tmp_path: Path) -> None:
    async with with_caches(tmp_path, "cache-1") as (c, caches):
        await c.put(1, b"hot photo" * 100)
        assert await _get(c, c.url(1)) == (200, "miss", b"hot photo" * 100)
        async with c.http.get(c.url(1)) as r:
            assert r.status == 200
            assert r.headers["X-Pinhole-Cache"] == "hit"
            assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert r.headers["Content-Type"] == "image/jpeg"
            assert await r.read() == b"hot photo" * 100
            etag = r.headers["ETag"]
        async with c.http.get(c.url(1), headers={"Range": "bytes=0-3"}) as r:
            assert r.status == 206 and await r.read() == b"hot "
        async with c.http.get(c.url(1), headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        st = caches.nodes["cache-1"].statistics()
        assert st.misses == 1 and st.hits == 3
        assert c.api.statistics().cache_hits == 3
        assert c.api.statistics().direct_reads == 0


@pytest.mark.parametrize("header", ["Via", "CDN-Loop"])
async def test_requests_through_a_cdn_are_not_admitted(tmp_path: Path, header: str) -> None:
    async with with_caches(tmp_path, "cache-1") as (c, caches):
        await c.put(2, b"cdn photo")
        for _ in range(2):
            assert await _get(c, c.url(2), **{header: "1.1 cdn.example"}) == (
                200,
                "miss",
                b"cdn photo",
            )
        assert caches.nodes["cache-1"].statistics().not_admitted == 2


async def test_read_only_volumes_are_not_admitted(tmp_path: Path) -> None:
    async with with_caches(tmp_path, "cache-1") as (c, caches):
        lv = c.directory.volumes[2]
        c.directory.set_volume(
            2, [(r["node_id"], r["url"]) for r in lv["replicas"]], writable=False
        )
        await c.put(3, b"old photo", vid=2)
        for _ in range(2):
            assert await _get(c, c.url(3, vid=2)) == (200, "miss", b"old photo")
        assert caches.nodes["cache-1"].statistics().not_admitted == 2


async def test_negotiation_through_the_cache(tmp_path: Path) -> None:
    async with with_caches(tmp_path, "cache-1") as (c, _):
        await c.put(4, b"jpeg", fmt=Format.JPEG)
        await c.put(4, b"webp", fmt=Format.WEBP)
        assert await _get(c, c.url(4, None), Accept=CHROME) == (200, "miss", b"webp")
        assert await _get(c, c.url(4, None), Accept=CHROME) == (200, "hit", b"webp")
        assert await _get(c, c.url(4, None), Accept="image/jpeg") == (200, "miss", b"jpeg")
        status, _, _ = await _get(c, c.url(5, None), Accept=CHROME)
        assert status == 404


async def test_absent_and_wrong_cookie_through_the_cache_are_identical(tmp_path: Path) -> None:
    async with with_caches(tmp_path, "cache-1") as (c, _):
        await c.put(6, b"private")
        absent = await _get(c, c.url(7))
        wrong = await _get(c, c.url(6, cookie=1))
        assert absent == wrong and absent[0] == 404


async def test_replica_failover_behind_the_cache(tmp_path: Path) -> None:
    async with with_caches(tmp_path, "cache-1") as (c, _):
        keys = [30, 31, 32]
        for k in keys:
            await c.put(k, b"replicated")
        await c.stores[0].stop()
        for k in keys:
            assert await _get(c, c.url(k)) == (200, "miss", b"replicated")
        for store in c.stores[1:]:
            await store.stop()
        for k in keys:  # cached: no store needed
            assert await _get(c, c.url(k)) == (200, "hit", b"replicated")
        status, _, body = await _get(c, c.url(40))
        assert status == 502 and b"replicas_unavailable" in body


async def test_keys_follow_the_ring_and_a_dead_cache_falls_back(tmp_path: Path) -> None:
    async with with_caches(tmp_path, "cache-1", "cache-2") as (c, caches):
        ring = c.api.directory.ring
        keys = list(range(100, 140))
        for k in keys:
            await c.put(k, b"k%d" % k)
            assert (await _get(c, c.url(k)))[0] == 200
        for node_id, node in caches.nodes.items():
            owned = [k for k in keys if ring.order(k)[0].node_id == node_id]
            assert node.statistics().misses == len(owned) > 0
        # cache-1 dies: its keys go to cache-2 (next in their order), the others still hit.
        await caches.stop("cache-1")
        for k in keys:
            status, how, body = await _get(c, c.url(k))
            assert status == 200 and body == b"k%d" % k
            assert how == ("miss" if ring.order(k)[0].node_id == "cache-1" else "hit")
        assert c.api.statistics().cache_failures == 1  # then skipped for cache_down_s


async def test_every_cache_down_reads_replicas_directly(tmp_path: Path) -> None:
    async with with_caches(tmp_path, "cache-1") as (c, caches):
        await c.put(50, b"direct")
        await caches.stop("cache-1")
        assert await _get(c, c.url(50)) == (200, "direct", b"direct")
        assert await _get(c, c.url(50)) == (200, "direct", b"direct")
        st = c.api.statistics()
        assert st.cache_failures == 1 and st.direct_reads == 2
