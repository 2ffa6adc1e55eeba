"""Originals and private photos at the router: rendition 0 is served only with the internal
read credential, signed URLs are checked without the database and expire, and their
playlists never reveal the cookie."""

from __future__ import annotations

import time

import aiohttp

from common.credentials import Credentials, Purpose
from common.photo import ORIGINAL_RENDITION, Format, photo_path
from common.signed_photo import expiry_for, sign_playlist, signed_path
from tests.conftest import auth
from tests.router.conftest import COOKIE, SECRET, Cluster

READ = auth(SECRET, Purpose.READ)
KEY = Credentials.from_secret(SECRET).url_key
assert KEY is not None


async def _answer(http: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, bytes, dict]:
    async with http.get(url, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.read(), dict(r.headers)


def _signed(cluster: Cluster, key: int, *, expiry: int, rendition: int = 640) -> str:
    return cluster.router_url + signed_path(
        KEY, 1, key, COOKIE, rendition, Format.JPEG, expiry=expiry
    )


async def test_an_original_is_404_for_everyone_but_internal_readers(cluster: Cluster) -> None:
    original = b"\xff\xd8 camera bytes with GPS" * 100
    await cluster.put(70, original, rendition=ORIGINAL_RENDITION)
    await cluster.put(70, b"published", rendition=640)
    url = cluster.url(70, rendition=ORIGINAL_RENDITION)
    absent = await _answer(cluster.http, cluster.url(71, rendition=ORIGINAL_RENDITION))
    for headers in ({}, auth(SECRET, Purpose.WRITE), auth(SECRET, Purpose.ADMIN)):
        status, body, got = await _answer(cluster.http, url, headers=headers)
        # Byte for byte what an absent photo gets: nothing tells that an original is there.
        assert (status, body) == (404, absent[1]) and absent[0] == 404
        assert original not in body
    negotiated = cluster.url(70, None, rendition=ORIGINAL_RENDITION)
    assert (await _answer(cluster.http, negotiated))[0] == 404
    # The published variant of the same media is public.
    assert (await _answer(cluster.http, cluster.url(70)))[:2] == (200, b"published")
    # Workers and the owner's download read it with the read credential, never cached.
    status, body, got = await _answer(cluster.http, url, headers={**READ, "Via": "1.1 worker"})
    assert (status, body) == (200, original)
    assert got["Cache-Control"] == "private, no-store"


async def test_a_signed_url_serves_until_it_expires(cluster: Cluster) -> None:
    await cluster.put(72, b"private photo")
    expiry = expiry_for(time.time(), ttl_s=600, step_s=60)
    url = _signed(cluster, 72, expiry=expiry)
    assert f"{COOKIE:016x}" not in url  # the real cookie never travels in a signed URL
    status, body, headers = await _answer(cluster.http, url)
    assert (status, body) == (200, b"private photo")
    cache_control = headers["Cache-Control"]
    assert cache_control.startswith("private, max-age=") and "immutable" not in cache_control
    assert 540 <= int(cache_control.rsplit("=", 1)[1]) <= 660
    # Without its query the path names a cookie no needle has: the public 404.
    status, _, _ = await _answer(cluster.http, url.split("?")[0])
    assert status == 404
    # Expired: refused, whatever the bytes.
    old = _signed(cluster, 72, expiry=int(time.time()) - 1)
    status, body, _ = await _answer(cluster.http, old)
    assert status == 403 and b"url_expired" in body and b"private photo" not in body
    assert cluster.api.statistics().signed_refused == 1


async def test_forged_signed_urls_are_refused(cluster: Cluster) -> None:
    await cluster.put(73, b"private")
    await cluster.put(73, b"private 1080", rendition=1080)
    expiry = expiry_for(time.time(), ttl_s=600, step_s=60)
    good = _signed(cluster, 73, expiry=expiry)
    path, query = good.split("?")
    e_part, s_part = query.split("&")
    other_key = Credentials.from_secret(b"another cluster's secret!!").url_key
    assert other_key is not None
    forged = [
        # a later expiry with the same signature
        f"{path}?e={expiry + 3600}&{s_part}",
        # the signature of another rendition's URL on this one
        path.replace("/640.jpg", "/1080.jpg") + "?" + query,
        # a valid signature from another key
        cluster.router_url + signed_path(other_key, 1, 73, COOKIE, 640, Format.JPEG, expiry=expiry),
        # malformed queries
        f"{path}?{e_part}",
        f"{path}?{e_part}&s=short",
        f"{path}?e=0{expiry}&{s_part}",
        f"{path}?e={'9' * 40}&{s_part}",
    ]
    for url in forged:
        status, body, headers = await _answer(cluster.http, url)
        assert status == 403, url
        assert b"private" not in body and headers["Cache-Control"] == "no-store"
    assert (await _answer(cluster.http, good))[0] == 200


async def test_a_signed_playlist_signs_every_url_in_it(cluster: Cluster) -> None:
    segment = photo_path(1, 74, COOKIE, 2400000, Format.TS)
    rung = photo_path(1, 74, COOKIE, 20240, Format.M3U8)
    text = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{rung}\n#EXTINF:4.000,\r\n{segment}\r\n"
    await cluster.put(74, text.encode(), rendition=1, fmt=Format.M3U8)
    await cluster.put(74, b"segment bytes", rendition=2400000, fmt=Format.TS)
    expiry = expiry_for(time.time(), ttl_s=600, step_s=60)
    url = cluster.router_url + signed_path(KEY, 1, 74, COOKIE, 1, Format.M3U8, expiry=expiry)
    status, body, headers = await _answer(cluster.http, url)
    assert status == 200 and headers["Cache-Control"].startswith("private")
    assert body == sign_playlist(KEY, text.encode(), expiry=expiry)
    assert f"{COOKIE:016x}".encode() not in body  # no public URL leaks out of it
    lines = body.decode().splitlines()
    assert lines[0] == "#EXTM3U" and lines[1] == "#EXT-X-STREAM-INF:BANDWIDTH=1"
    signed_segment = lines[4]
    assert signed_segment.startswith("/p/1/74/") and "?e=" in signed_segment
    status, got, _ = await _answer(cluster.http, cluster.router_url + signed_segment)
    assert (status, got) == (200, b"segment bytes")
    # Public playlists are served as stored.
    status, got, _ = await _answer(cluster.http, cluster.url(74, Format.M3U8, rendition=1))
    assert (status, got) == (200, text.encode())
