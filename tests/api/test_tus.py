"""tus 1.0 resumable uploads on a real in-process cluster: the stock client (tuspy) uploads in
chunks with checksums; a PATCH cut off mid-body several times still completes byte-exact from
the acknowledged offset; concurrent PATCHes; protocol errors; metadata; expiry and the
sweeper; a rejected file leaves nothing; uploads are private to their owner."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

from api import tus, tus_store
from tests.api.conftest import TOKEN, MediaEnv
from tests.api.test_media import fetch, get_media, live_needles, media_rows

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def noisy_jpeg(width: int = 300, height: int = 200) -> bytes:
    """Random noise: large for its size (about 1.4 bytes a pixel at quality 95)."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def meta(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def part_of(env: MediaEnv, url: str) -> Any:
    return tus_store.part_path(env.api.data_dir, url.rsplit("/", 1)[1])


async def create(http: aiohttp.ClientSession, env: MediaEnv, length: int, **m: str) -> str:
    headers = {**env.auth, **TUS, "Upload-Length": str(length), "Upload-Metadata": meta(**m)}
    async with http.post(env.api_url + "/api/v1/uploads", headers=headers) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Upload-Offset"] == "0" and r.headers["Tus-Resumable"] == "1.0.0"
        expires = r.headers["Upload-Expires"]
        assert expires.endswith(" GMT")
        location = r.headers["Location"]
        assert location.startswith(env.api_url + "/api/v1/uploads/")
        return location


async def head(http: aiohttp.ClientSession, env: MediaEnv, url: str) -> tuple[int, Any]:
    async with http.head(url, headers={**env.auth, **TUS}) as r:
        return r.status, r.headers


async def offset_of(http: aiohttp.ClientSession, env: MediaEnv, url: str) -> int:
    status, headers = await head(http, env, url)
    assert status == 200
    return int(headers["Upload-Offset"])


async def patch(
    http: aiohttp.ClientSession, env: MediaEnv, url: str, offset: int, body: Any, **extra: str
) -> tuple[int, Any, bytes]:
    headers = {**env.auth, **TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **extra}
    async with http.patch(url, data=body, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def error_code(response: aiohttp.ClientResponse) -> tuple[int, str]:
    assert response.headers["Tus-Resumable"] == "1.0.0"
    return response.status, (await response.json())["error"]["code"]


async def test_the_stock_client_uploads_a_photo_in_chunks_with_checksums(env: MediaEnv) -> None:
    from tusclient import client

    photo = noisy_jpeg(1400, 1000)
    assert len(photo) > 1_500_000  # several 256 KiB chunks

    def upload() -> str:
        c = client.TusClient(
            env.api_url + "/api/v1/uploads", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        uploader = c.uploader(
            file_stream=io.BytesIO(photo),
            chunk_size=256 * 1024,
            metadata={"filename": "noise.jpg", "filetype": "image/jpeg", "media_type": "image"},
            upload_checksum=True,
        )
        uploader.upload()
        return str(uploader.url)

    url = await asyncio.to_thread(upload)
    async with aiohttp.ClientSession() as http:
        status, headers = await head(http, env, url)
        assert status == 200 and headers["Upload-Offset"] == str(len(photo))
        media_id = headers["Pinhole-Media-Id"]
        async with http.get(url, headers=env.auth) as r:
            doc = await r.json()
        assert doc["upload_id"] == url.rsplit("/", 1)[1] and doc["media_id"] == media_id
        assert doc["offset"] == doc["length"] == len(photo) and doc["expires_at"].endswith("Z")
    status, media = await get_media(env, media_id)
    assert status == 200 and media["media_type"] == "image"
    assert media["status"] in ("processing", "ready") and media["width"] == 1400
    code, _, body = await fetch(env.router_url + urlsplit(media["original_url"]).path)
    assert code == 200 and body == photo
    assert not part_of(env, url).exists()


async def _cut_patch(
    env: MediaEnv, url: str, offset: int, data: bytes, send: int, **extra: str
) -> None:
    """A PATCH declaring len(data) bytes whose connection is cut after `send` of them."""
    api = urlsplit(env.api_url)
    assert api.hostname is not None and api.port is not None
    _, writer = await asyncio.open_connection(api.hostname, api.port)
    lines = [
        f"PATCH {urlsplit(url).path} HTTP/1.1",
        f"Host: {api.netloc}",
        f"Authorization: Bearer {TOKEN}",
        "Tus-Resumable: 1.0.0",
        f"Upload-Offset: {offset}",
        f"Content-Type: {OCTETS}",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data[:send])
    await writer.drain()
    await asyncio.sleep(0.2)  # the server reads what was sent
    writer.transport.abort()
    await idle(env, url)


async def idle(env: MediaEnv, url: str) -> None:
    """Waits until no request holds the upload: a PATCH at an impossible offset answers
    409 upload_busy while one does, 409 offset_mismatch after (and changes nothing)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            status, _, body = await patch(http, env, url, 2**62, b"")
            assert status == 409
            if b"offset_mismatch" in body:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the upload stayed busy")


async def test_an_upload_cut_off_several_times_completes_byte_exact(env: MediaEnv) -> None:
    photo = noisy_jpeg(1600, 1200)
    assert len(photo) > 2 * tus.WRITE_BATCH_BYTES  # the first cut comes after a batch write
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, len(photo), filename="p.jpg")
        offset = 0
        for _ in range(4):
            sent = (len(photo) - offset) // 2
            await _cut_patch(env, url, offset, photo[offset:], send=sent)
            acknowledged = await offset_of(http, env, url)
            assert offset < acknowledged <= offset + sent  # kept what arrived, no more
            assert part_of(env, url).stat().st_size >= acknowledged
            offset = acknowledged
        # A cut-off chunk with a checksum cannot be verified: it is dropped entirely.
        digest = base64.b64encode(hashlib.sha256(photo[offset:]).digest()).decode()
        await _cut_patch(
            env, url, offset, photo[offset:], send=1000, **{"Upload-Checksum": f"sha256 {digest}"}
        )
        assert await offset_of(http, env, url) == offset
        status, headers, _ = await patch(http, env, url, offset, photo[offset:])
        assert status == 204 and headers["Upload-Offset"] == str(len(photo))
        media_id = headers["Pinhole-Media-Id"]
    _, media = await get_media(env, media_id)
    code, _, body = await fetch(env.router_url + urlsplit(media["original_url"]).path)
    assert code == 200 and body == photo


async def test_a_second_patch_while_one_streams_is_409(env: MediaEnv) -> None:
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, 10_000)
        api = urlsplit(env.api_url)
        assert api.hostname is not None and api.port is not None
        _, writer = await asyncio.open_connection(api.hostname, api.port)
        writer.write(
            (
                f"PATCH {urlsplit(url).path} HTTP/1.1\r\nHost: {api.netloc}\r\n"
                f"Authorization: Bearer {TOKEN}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                f"Content-Type: {OCTETS}\r\nContent-Length: 10000\r\n\r\n"
            ).encode()
            + b"a" * 3000
        )
        await writer.drain()
        for _ in range(100):  # until the first PATCH holds the upload, waiting for more
            _, _, body = await patch(http, env, url, 2**62, b"")
            if b"upload_busy" in body:
                break
            await asyncio.sleep(0.05)
        status, _, body = await patch(http, env, url, 0, b"b" * 100)
        assert status == 409 and b"upload_busy" in body
        writer.transport.abort()
        await idle(env, url)
        assert await offset_of(http, env, url) == 3000
        status, headers, _ = await patch(http, env, url, 3000, b"c" * 100)
        assert status == 204 and headers["Upload-Offset"] == "3100"
    assert part_of(env, url).read_bytes() == b"a" * 3000 + b"c" * 100


async def test_protocol_answers_and_errors(env: MediaEnv) -> None:
    uploads = env.api_url + "/api/v1/uploads"
    async with aiohttp.ClientSession() as http:
        async with http.options(uploads) as r:
            assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
            assert r.headers["Tus-Version"] == "1.0.0"
            assert set(r.headers["Tus-Extension"].split(",")) == {
                "creation", "termination", "expiration", "checksum"
            }  # fmt: skip
            assert int(r.headers["Tus-Max-Size"]) == env.media.limits.video_bytes_max
            assert set(r.headers["Tus-Checksum-Algorithm"].split(",")) == {
                "sha1", "sha256", "md5", "crc32"
            }  # fmt: skip
        async with http.post(uploads, headers={**TUS, "Upload-Length": "5"}) as r:
            assert await error_code(r) == (401, "unauthorized")
        async with http.post(uploads, headers={**env.auth, "Upload-Length": "5"}) as r:
            assert await error_code(r) == (412, "tus_version_unsupported")
            assert r.headers["Tus-Version"] == "1.0.0"
        too_big = {**env.auth, **TUS, "Upload-Length": str(env.media.limits.video_bytes_max + 1)}
        async with http.post(uploads, headers=too_big) as r:
            assert await error_code(r) == (413, "file_too_large")
        for bad in ({"Upload-Defer-Length": "1"}, {"Upload-Length": "-1"}, {"Upload-Length": "0"}):
            async with http.post(uploads, headers={**env.auth, **TUS, **bad}) as r:
                assert await error_code(r) == (400, "bad_request"), bad

        url = await create(http, env, 2000)
        part = part_of(env, url)
        status, _, body = await patch(http, env, url, 7, b"x" * 10)
        assert status == 409 and b"offset_mismatch" in body
        wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        status, headers, body = await patch(
            http, env, url, 0, b"x" * 1000, **{"Upload-Checksum": f"sha1 {wrong}"}
        )
        assert status == 460 and b"checksum_mismatch" in body
        assert headers["Tus-Resumable"] == "1.0.0"
        assert await offset_of(http, env, url) == 0 and part.stat().st_size == 0
        status, _, body = await patch(http, env, url, 0, b"x", **{"Upload-Checksum": "xxh3 AA=="})
        assert status == 400 and b"bad_checksum" in body
        crc = base64.b64encode(zlib.crc32(b"y" * 1000).to_bytes(4, "big")).decode()
        status, headers, _ = await patch(
            http, env, url, 0, b"y" * 1000, **{"Upload-Checksum": f"crc32 {crc}"}
        )
        assert status == 204 and headers["Upload-Offset"] == "1000"
        assert headers["Upload-Expires"].endswith(" GMT")
        status, _, body = await patch(http, env, url, 1000, b"z" * 1001)
        assert status == 413 and b"length_exceeded" in body
        assert await offset_of(http, env, url) == 1000
        headers = {**env.auth, **TUS, "Upload-Offset": "1000", "Content-Type": "text/plain"}
        async with http.patch(url, data=b"x", headers=headers) as r:
            assert await error_code(r) == (415, "bad_content_type")
        async with http.patch(url, data=b"x", headers={**headers, "Content-Type": OCTETS}) as r:
            assert r.status == 204 and r.headers["Upload-Offset"] == "1001"
        assert part.read_bytes() == b"y" * 1000 + b"x"
        async with http.delete(url, headers={**env.auth, **TUS}) as r:
            assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
        assert (await head(http, env, url))[0] == 404
        async with http.get(url, headers=env.auth) as r:
            assert await error_code(r) == (404, "not_found")
        assert not part.exists()
        assert (await head(http, env, uploads + "/not-an-id"))[0] == 404


async def test_metadata_is_checked_at_creation_and_used_at_ingest(env: MediaEnv) -> None:
    uploads = env.api_url + "/api/v1/uploads"
    photo = noisy_jpeg(200, 150)
    async with aiohttp.ClientSession() as http:
        for metadata, expected in [
            ("filename !!notbase64", (400, "bad_request")),
            ("filename YQ==,filename Yg==", (400, "bad_request")),
            (meta(media_type="audio"), (400, "bad_media_type")),
            (meta(filter_id="sepia-nope"), (422, "unknown_filter")),
            (meta(media_type="video", filter_id="juno"), (422, "filter_not_supported")),
        ]:
            headers = {**env.auth, **TUS, "Upload-Length": "100", "Upload-Metadata": metadata}
            async with http.post(uploads, headers=headers) as r:
                assert await error_code(r) == expected, metadata
        limit = env.media.limits.image_bytes_max
        headers = {**env.auth, **TUS, "Upload-Length": str(limit + 1)}
        async with http.post(
            uploads, headers={**headers, "Upload-Metadata": meta(media_type="image")}
        ) as r:
            assert await error_code(r) == (413, "file_too_large")

        # Unknown keys are ignored; the filter reaches the media.
        url = await create(http, env, len(photo), filter_id="juno", relativePath="x/y")
        status, headers, _ = await patch(http, env, url, 0, photo)
        assert status == 204
        _, media = await get_media(env, headers["Pinhole-Media-Id"])
        assert media["filter_id"] == "juno"

        # A declared type the content contradicts is the completing PATCH's 422.
        rows = await media_rows(env)
        url = await create(http, env, len(photo), media_type="video")
        status, _, body = await patch(http, env, url, 0, photo)
        assert status == 422 and b"media_type_mismatch" in body
        assert (await head(http, env, url))[0] == 404 and not part_of(env, url).exists()
        assert await media_rows(env) == rows


async def test_an_expired_upload_answers_410_and_is_reclaimed(env: MediaEnv) -> None:
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, 5000)
        status, _, _ = await patch(http, env, url, 0, b"\xff\xd8\xff" + b"\0" * 97)
        assert status == 204
        upload_id = url.rsplit("/", 1)[1]
        part = part_of(env, url)
        assert part.stat().st_size == 100
        live = await create(http, env, 5000)
        await tus_store.set_expiry(env.ctx.db, upload_id, time.time() - 1)
        assert (await head(http, env, url))[0] == 410
        status, _, body = await patch(http, env, url, 100, b"x")
        assert status == 410 and b"upload_expired" in body
        assert await tus.sweep_once(env.ctx, tus.UploadLocks()) == 1
        assert not part.exists() and await tus_store.get(env.ctx.db, upload_id) is None
        assert (await head(http, env, url))[0] == 404
        assert (await head(http, env, live))[0] == 200 and part_of(env, live).exists()


async def test_a_rejected_file_completed_by_tus_leaves_nothing(env: MediaEnv) -> None:
    garbage = b"this is not a photo at all" * 100
    photo = noisy_jpeg(300, 200)
    truncated = photo[: len(photo) // 2]
    async with aiohttp.ClientSession() as http:
        for data, expected in [
            (garbage, (415, "unsupported_format")),
            (truncated, (422, "corrupt_file")),
        ]:
            url = await create(http, env, len(data), filename="x.jpg")
            half = len(data) // 2
            assert (await patch(http, env, url, 0, data[:half]))[0] == 204
            status, _, body = await patch(http, env, url, half, data[half:])
            assert status == expected[0] and expected[1].encode() in body
            assert (await head(http, env, url))[0] == 404
    assert await media_rows(env) == 0 and live_needles(env) == 0
    assert not list(part_of(env, url).parent.glob("*.part"))


async def test_uploads_are_private_and_limited_per_user(env: MediaEnv) -> None:
    now = time.time()

    def upload(upload_id: str, owner_id: int) -> tus_store.Upload:
        return tus_store.Upload(upload_id, owner_id, 10, 0, "{}", now, now + 60, None)

    async with aiohttp.ClientSession() as http:
        mine = await create(http, env, 10)
        got = await tus_store.get(env.ctx.db, mine.rsplit("/", 1)[1])
        assert got is not None and got.owner_id == 1
        assert await tus_store.create(env.ctx.db, upload("f" * 32, 2), per_owner_max=1, now=now)
        assert not await tus_store.create(env.ctx.db, upload("e" * 32, 2), per_owner_max=1, now=now)
        theirs = mine.rsplit("/", 1)[0] + "/" + "f" * 32
        assert (await head(http, env, theirs))[0] == 404  # user 2's upload: not there for 1
        assert (await patch(http, env, theirs, 0, b"x" * 10))[0] == 404
        async with http.delete(theirs, headers={**env.auth, **TUS}) as r:
            assert r.status == 404
        assert await tus_store.get(env.ctx.db, "f" * 32) is not None

        limit = env.api.tus_uploads_per_user_max
        for _ in range(limit - 1):
            await create(http, env, 10)
        headers = {**env.auth, **TUS, "Upload-Length": "10"}
        async with http.post(env.api_url + "/api/v1/uploads", headers=headers) as r:
            assert await error_code(r) == (429, "too_many_uploads")
        # An upload that is over (here: rejected at completion) no longer counts.
        status, headers, _ = await patch(http, env, mine, 0, b"0123456789")
        assert status == 415  # not media: the upload is gone, its place freed
        await create(http, env, 10)


async def test_a_complete_upload_outlives_a_storage_outage(env: MediaEnv) -> None:
    """No writable volume at completion: 503, the upload is kept whole, and a HEAD once
    storage is back ingests it (what a stock client's resume does)."""
    photo = noisy_jpeg(200, 150)
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, len(photo))
        for node in env.cluster.nodes:
            await node.stop()
        status, _, body = await patch(http, env, url, 0, photo)
        assert status == 503 and b"no_writable_volume" in body
        async with http.get(url, headers=env.auth) as r:
            doc = await r.json()
        assert doc["offset"] == doc["length"] == len(photo) and doc["media_id"] is None
        assert part_of(env, url).read_bytes() == photo
        assert (await head(http, env, url))[0] == 503  # the retry meets the same outage
        for node in env.cluster.nodes:
            await node.start()
        for _ in range(100):  # until the directory has writable volumes again
            status, headers = await head(http, env, url)
            if status != 503:
                break
            await asyncio.sleep(0.1)
        assert status == 200 and headers["Upload-Offset"] == str(len(photo))
        media_id = headers["Pinhole-Media-Id"]
        status, headers, _ = await patch(http, env, url, len(photo), b"")
        assert status == 204 and headers["Pinhole-Media-Id"] == media_id  # no second media
    assert not part_of(env, url).exists() and await media_rows(env) == 1
    _, media = await get_media(env, media_id)
    code, _, body = await fetch(env.router_url + urlsplit(media["original_url"]).path)
    assert code == 200 and body == photo
