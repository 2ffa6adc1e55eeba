"""Every answer of the router, through a real router over real store nodes (no cache node
listed: the router reads the replicas itself)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from common.credentials import Purpose
from common.photo import Format, alt_key
from tests.conftest import auth
from tests.router.conftest import COOKIE, PUBLIC_RENDITION, SECRET, Cluster, cluster_of

READ = auth(SECRET, Purpose.READ)
ADMIN = auth(SECRET, Purpose.ADMIN)
METRICS = auth(SECRET, Purpose.METRICS)

IMMUTABLE = "public, max-age=31536000, immutable"
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
OLD_SAFARI = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"


async def _error(resp: object) -> tuple[int, str]:
    import aiohttp

    assert isinstance(resp, aiohttp.ClientResponse)
    doc = json.loads(await resp.read())
    return resp.status, doc["error"]["code"]


async def test_exact_format_get_and_head(cluster: Cluster) -> None:
    data = b"jpeg-bytes" * 1000
    await cluster.put(42, data)
    async with cluster.http.get(cluster.url(42)) as r:
        assert r.status == 200
        assert await r.read() == data
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["Cache-Control"] == IMMUTABLE
        assert r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["X-Pinhole-Cache"] == "direct"
        assert "Vary" not in r.headers
        etag = r.headers["ETag"]
        assert etag.startswith('"') and len(etag) == 18
    async with cluster.http.head(cluster.url(42)) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(len(data))
        assert r.headers["ETag"] == etag
        assert await r.read() == b""


async def test_content_type_follows_the_format(cluster: Cluster) -> None:
    for fmt, mime in [
        (Format.PNG, "image/png"),
        (Format.MP4, "video/mp4"),
        (Format.M3U8, "application/vnd.apple.mpegurl"),
        (Format.UNKNOWN, "application/octet-stream"),
    ]:
        await cluster.put(50, mime.encode(), fmt=fmt, rendition=2)
        async with cluster.http.get(cluster.url(50, fmt, rendition=2)) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == mime
            assert await r.read() == mime.encode()


async def test_if_none_match_answers_304(cluster: Cluster) -> None:
    await cluster.put(7, b"x" * 500)
    async with cluster.http.get(cluster.url(7)) as r:
        etag = r.headers["ETag"]
    for inm in (etag, f"W/{etag}", f'"0000000000000000", {etag}', "*"):
        async with cluster.http.get(cluster.url(7), headers={"If-None-Match": inm}) as r:
            assert r.status == 304, inm
            assert r.headers["ETag"] == etag
            assert r.headers["Cache-Control"] == IMMUTABLE
            assert await r.read() == b""
    async with cluster.http.get(
        cluster.url(7), headers={"If-None-Match": '"0000000000000000"'}
    ) as r:
        assert r.status == 200


async def test_ranges(cluster: Cluster) -> None:
    data = bytes(range(256)) * 4
    await cluster.put(8, data)
    for spec, expected in [
        ("bytes=0-9", data[:10]),
        ("bytes=1000-", data[1000:]),
        ("bytes=-5", data[-5:]),
        ("bytes=1020-5000", data[1020:]),
        ("bytes=1020-" + "9" * 5000, data[1020:]),
        ("bytes=-" + "9" * 5000, data),
    ]:
        async with cluster.http.get(cluster.url(8), headers={"Range": spec}) as r:
            assert r.status == 206, spec
            assert await r.read() == expected
            start = (
                len(data) - len(expected)
                if spec.startswith("bytes=-")
                else int(spec[6:].split("-")[0])
            )
            end = start + len(expected) - 1
            assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
            assert r.headers["Content-Type"] == "image/jpeg"
    for spec in ("bytes=1024-", "bytes=5000-6000", "bytes=-0", "bytes=" + "9" * 5000 + "-"):
        async with cluster.http.get(cluster.url(8), headers={"Range": spec}) as r:
            assert r.status == 416, spec
            assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    # Several ranges, other units, nonsense: the whole photo.
    for spec in ("bytes=0-1,5-6", "items=0-1", "bytes=abc", "bytes=9-3"):
        async with cluster.http.get(cluster.url(8), headers={"Range": spec}) as r:
            assert r.status == 200, spec
            assert await r.read() == data
    async with cluster.http.get(cluster.url(8)) as r:
        etag = r.headers["ETag"]
    async with cluster.http.get(
        cluster.url(8), headers={"Range": "bytes=0-9", "If-Range": etag}
    ) as r:
        assert r.status == 206
    async with cluster.http.get(
        cluster.url(8), headers={"Range": "bytes=0-9", "If-Range": '"0000000000000000"'}
    ) as r:
        assert r.status == 200
        assert await r.read() == data


async def test_negotiation_picks_the_best_existing_variant(cluster: Cluster) -> None:
    await cluster.put(9, b"jpeg", fmt=Format.JPEG, rendition=1)
    await cluster.put(9, b"webp", fmt=Format.WEBP, rendition=1)
    url = cluster.url(9, None, rendition=1)
    cases = [
        (CHROME, b"webp", Format.WEBP),  # avif preferred, but absent
        ("image/jpeg", b"jpeg", Format.JPEG),
        ("image/webp;q=0.5, image/jpeg", b"jpeg", Format.JPEG),
        ("image/*, image/webp;q=0", b"jpeg", Format.JPEG),
        (OLD_SAFARI, b"jpeg", Format.JPEG),
        ("*/*", b"jpeg", Format.JPEG),  # a wildcard alone does not vouch for webp
        ("image/webp", b"webp", Format.WEBP),
    ]
    for accept, body, fmt in cases:
        async with cluster.http.get(url, headers={"Accept": accept}) as r:
            assert r.status == 200, accept
            assert await r.read() == body, accept
            assert r.headers["Vary"] == "Accept"
            assert r.headers["Content-Type"] == f"image/{fmt.name.lower()}"
            assert r.headers["Content-Location"] == cluster.url(9, fmt, rendition=1).removeprefix(
                cluster.router_url
            )
    await cluster.put(9, b"avif", fmt=Format.AVIF, rendition=1)
    async with cluster.http.get(url, headers={"Accept": CHROME}) as r:
        assert await r.read() == b"avif"
        assert r.headers["Content-Type"] == "image/avif"
        etag = r.headers["ETag"]
    async with cluster.http.get(url, headers={"Accept": CHROME, "If-None-Match": etag}) as r:
        assert r.status == 304
        assert r.headers["Vary"] == "Accept"
    # Accepted formats that do not exist: 404; nothing acceptable at all: 406.
    async with cluster.http.get(url, headers={"Accept": "image/png"}) as r:
        assert await _error(r) == (404, "not_found")
    async with cluster.http.get(url, headers={"Accept": "text/html"}) as r:
        assert await _error(r) == (406, "not_acceptable")


async def test_bad_urls_are_clear_json_404s(cluster: Cluster) -> None:
    for path, fragment in [
        ("/p/1/2/0123456789abcdef", "a photo URL is"),
        ("/p/01/2/0123456789abcdef/0.jpg", "volume must be a decimal"),
        ("/p/1/2/0123456789ABCDEF/0.jpg", "cookie must be 16 lower-case hex"),
        ("/p/1/2/0123456789abcdef/0.tiff", "unknown extension"),
        ("/p/1/2/0123456789abcdef/99999999.jpg", "rendition must be within"),
        ("/nope", "photos are at"),
        ("/", "photos are at"),
    ]:
        async with cluster.http.get(cluster.router_url + path) as r:
            assert r.status == 404, path
            assert r.headers["Content-Type"] == "application/json"
            doc = json.loads(await r.read())
            assert doc["error"]["code"] == "bad_path"
            assert fragment in doc["error"]["message"], (path, doc)
    async with cluster.http.post(cluster.url(1)) as r:
        assert await _error(r) == (405, "method_not_allowed")
    async with cluster.http.delete(cluster.router_url + "/status") as r:
        assert await _error(r) == (405, "method_not_allowed")


async def test_unknown_volume_absent_photo_and_wrong_cookie(cluster: Cluster) -> None:
    await cluster.put(11, b"secret photo")
    async with cluster.http.get(cluster.url(11, vid=77)) as r:
        assert await _error(r) == (404, "volume_not_found")
    async with cluster.http.get(cluster.url(12)) as r:
        absent = (r.status, r.headers["Content-Type"], await r.read())
    async with cluster.http.get(cluster.url(11, cookie=COOKIE ^ 1)) as r:
        wrong_cookie = (r.status, r.headers["Content-Type"], await r.read())
    assert absent == wrong_cookie
    assert absent[0] == 404 and json.loads(absent[2])["error"]["code"] == "not_found"
    async with cluster.http.get(cluster.url(11)) as r:
        assert r.status == 200


async def test_failover_when_a_replica_node_is_stopped(cluster: Cluster) -> None:
    data = b"survives" * 100
    keys = [300, 301, 302]  # one per rotation: each replica is some key's first choice
    for k in keys:
        await cluster.put(k, data)
    await cluster.stores[0].stop()
    for k in keys:
        async with cluster.http.get(cluster.url(k)) as r:
            assert r.status == 200, k
            assert await r.read() == data
    assert cluster.directory.repairs == []  # a node that is down is not a bad copy


async def test_no_replica_answers_502(cluster: Cluster) -> None:
    await cluster.put(13, b"gone")
    for store in cluster.stores:
        await store.stop()
    async with cluster.http.get(cluster.url(13)) as r:
        assert await _error(r) == (502, "replicas_unavailable")
        assert r.headers["Cache-Control"] == "no-store"
    # Every negotiated format stops at the first unavailable one: no lesser format.
    async with cluster.http.get(cluster.url(13, None), headers={"Accept": CHROME}) as r:
        assert r.status == 502
    assert cluster.api.statistics().direct_read_failures >= 2


async def test_missing_copy_on_one_replica_is_reported_for_repair(cluster: Cluster) -> None:
    key = 600  # 600 % 3 == 0: store-1 is this key's first replica
    await cluster.put(key, b"two copies", on=[1, 2])
    async with cluster.http.get(cluster.url(key)) as r:
        assert r.status == 200
        assert await r.read() == b"two copies"
    for _ in range(100):
        if cluster.directory.repairs:
            break
        await asyncio.sleep(0.01)
    [report] = cluster.directory.repairs
    alt = alt_key(PUBLIC_RENDITION, Format.JPEG)
    assert report["volume_id"] == 1 and report["key"] == str(key) and report["alt_key"] == alt
    assert report["node_id"] == "store-1" and report["reason"] == "read"


async def test_directory_lookups_are_cached_and_single_flight(cluster: Cluster) -> None:
    await cluster.put(14, b"a")
    directory = cluster.directory
    before = directory.volume_requests
    results = await asyncio.gather(
        *(_status(cluster, cluster.url(14, vid=2 if i % 2 else 1)) for i in range(20))
    )
    assert sorted(set(results)) == [200, 404]
    # One fetch per volume however many requests arrived together.
    assert directory.volume_requests - before == 2
    lookups = cluster.api.directory.statistics().lookups
    for _ in range(5):
        assert await _status(cluster, cluster.url(14)) == 200
    assert directory.volume_requests - before == 2
    # Answered from the cache without waiting, and still counted one per photo request.
    assert cluster.api.directory.statistics().lookups == lookups + 5


async def _status(cluster: Cluster, url: str) -> int:
    async with cluster.http.get(url) as r:
        await r.read()
        return r.status


async def test_expired_lookups_keep_serving_while_the_directory_is_down(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, lookup_ttl_s=0.05) as c:
        await c.put(15, b"still here")
        assert await _status(c, c.url(15)) == 200
        c.directory.fail = True
        await asyncio.sleep(0.1)
        for _ in range(3):
            assert await _status(c, c.url(15)) == 200
        # A volume never seen needs the directory: 503.
        async with c.http.get(c.url(15, vid=2)) as r:
            assert await _error(r) == (503, "directory_unavailable")
            assert r.headers["Retry-After"] == "1"
        assert c.api.directory.statistics().stale_served >= 1


async def test_unknown_volume_is_remembered_only_briefly(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, unknown_volume_ttl_s=0.05) as c:
        lv2 = c.directory.volumes.pop(2)
        await c.put(16, b"new volume", vid=2)
        async with c.http.get(c.url(16, vid=2)) as r:
            assert await _error(r) == (404, "volume_not_found")
        c.directory.volumes[2] = lv2
        await asyncio.sleep(0.1)
        assert await _status(c, c.url(16, vid=2)) == 200


async def test_a_moved_volume_is_looked_up_again(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, lookup_ttl_s=60.0) as c:
        await c.put(17, b"moved")
        good = c.directory.volumes[1]
        c.directory.set_volume(1, [("store-9", "http://127.0.0.1:9")])  # nothing listens
        async with c.http.get(c.url(18)) as r:
            assert r.status == 502  # the router now caches the dead replica list
        c.directory.volumes[1] = good
        # The cached replicas fail, so the router asks again at once (not after 60 s).
        assert await _status(c, c.url(17)) == 200
        assert c.api.statistics().lookup_refreshes >= 1


async def test_status_healthz_metrics(cluster: Cluster) -> None:
    await cluster.put(19, b"m")
    assert await _status(cluster, cluster.url(19)) == 200
    async with cluster.http.get(cluster.router_url + "/healthz") as r:
        assert r.status == 200 and await r.json() == {"ok": True}  # no topology in it
    for path in ("/status", "/metrics"):
        async with cluster.http.get(cluster.router_url + path) as r:
            assert r.status == 401
        async with cluster.http.get(cluster.router_url + path, headers=READ) as r:
            assert r.status == 401  # reading photos is not reading the router's state
    async with cluster.http.get(cluster.router_url + "/status", headers=ADMIN) as r:
        doc = await r.json()
        assert doc["router"]["photos_served"] == 1
        assert doc["router"]["direct_reads"] == 1
        assert doc["lookup"]["lookup_fetches"] == 1
        assert doc["caches"] == [] and doc["caches_down"] == []
        assert doc["http"]["requests_total"] >= 2
    async with cluster.http.get(cluster.router_url + "/metrics", headers=METRICS) as r:
        text = await r.text()
        assert "pinhole_router_photos_served_total 1.0" in text
        assert "pinhole_router_direct_reads_total 1.0" in text
        assert 'pinhole_router_responses_total{class="2xx"}' in text


@pytest.mark.parametrize("header", ["Via", "CDN-Loop"])
async def test_dead_cache_node_falls_back_to_replicas(cluster: Cluster, header: str) -> None:
    await cluster.put(20, b"fallback")
    cluster.directory.caches = [{"node_id": "cache-x", "url": "http://127.0.0.1:9"}]
    await cluster.api.directory.refresh_caches()
    async with cluster.http.get(cluster.url(20), headers={header: "1.1 cdn"}) as r:
        assert r.status == 200
        assert await r.read() == b"fallback"
        assert r.headers["X-Pinhole-Cache"] == "direct"
    st = cluster.api.statistics()
    assert st.cache_failures == 1
    # The failed node is skipped for cache_down_s: no second failure, no timeout paid.
    assert await _status(cluster, cluster.url(20)) == 200
    assert cluster.api.statistics().cache_failures == 1
    async with cluster.http.get(cluster.router_url + "/status", headers=ADMIN) as r:
        assert (await r.json())["caches_down"] == ["http://127.0.0.1:9"]
