"""tus 1.0 resumable uploads: the stock client (tuspy) uploads in chunks with checksums; a
PATCH cut off mid-body several times still completes byte-exact from the acknowledged
offset; protocol errors; expiry and the sweeper; a rejected file leaves nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from api import tus, tus_store
from tests.api.conftest import MediaEnv
from tests.api.test_media import fetch_original, get_media, live_needles, media_rows

TUS = {"Tus-Resumable": "1.0.0"}
CUT_READ_S = 1.0
CUT_RECORDED_S_MAX = 10.0


def noisy_jpeg(width: int = 900, height: int = 700) -> bytes:
    """Random noise: large for its size, so an upload spans many chunks."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def meta(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


async def create(http: aiohttp.ClientSession, env: MediaEnv, length: int, **m: str) -> str:
    headers = {**env.auth, **TUS, "Upload-Length": str(length), "Upload-Metadata": meta(**m)}
    async with http.post(env.api_url + "/api/v1/uploads", headers=headers) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Upload-Offset"] == "0" and r.headers["Upload-Expires"]
        return r.headers["Location"]


async def head(http: aiohttp.ClientSession, env: MediaEnv, url: str) -> tuple[int, Any]:
    async with http.head(url, headers={**env.auth, **TUS}) as r:
        return r.status, r.headers


async def patch(
    http: aiohttp.ClientSession, env: MediaEnv, url: str, offset: int, body: Any, **extra: str
) -> tuple[int, Any, bytes]:
    headers = {
        **env.auth,
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        **extra,
    }
    async with http.patch(url, data=body, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def test_the_stock_client_uploads_in_chunks_with_checksums(env: MediaEnv) -> None:
    from tusclient import client

    photo = noisy_jpeg()
    assert len(photo) > 500_000  # several 256 KiB chunks

    def upload() -> str:
        c = client.TusClient(env.api_url + "/api/v1/uploads", headers=env.auth)
        uploader = c.uploader(
            file_stream=io.BytesIO(photo),
            chunk_size=256 * 1024,
            metadata={"filename": "noise.jpg", "media_type": "image"},
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
            assert doc["media_id"] == media_id and doc["offset"] == doc["length"] == len(photo)
    status, media = await get_media(env, media_id)
    assert status == 200 and media["status"] == "processing" and media["media_type"] == "image"
    code, _, body = await fetch_original(env, media)
    assert code == 200 and body == photo
    assert not list((env.api.data_dir / "tus").glob("*.part"))


async def _cut_patch(env: MediaEnv, url: str, offset: int, data: bytes, send: int) -> None:
    """A PATCH declaring len(data) bytes whose connection drops after `send` of them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(env.api_url.rsplit(":", 1)[1]))
    path = url.split("://", 1)[1].split("/", 1)[1]
    head_lines = (
        f"PATCH /{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {env.token}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head_lines.encode() + data[:send])
    await writer.drain()
    # Time for the server to read what was sent: the reset below discards what it has not.
    await asyncio.sleep(CUT_READ_S)
    writer.transport.abort()
    del reader


async def _offset_after_cut(http: aiohttp.ClientSession, env: MediaEnv, url: str, was: int) -> int:
    """The upload's offset once the server has recorded the cut-off PATCH (it does so when
    the body ends): polled until it moves past `was`, bounded."""
    deadline = asyncio.get_running_loop().time() + CUT_RECORDED_S_MAX
    while True:
        status, headers = await head(http, env, url)
        assert status == 200
        offset = int(headers["Upload-Offset"])
        if offset > was or asyncio.get_running_loop().time() > deadline:
            return offset
        await asyncio.sleep(0.05)


async def test_an_upload_cut_off_several_times_completes_byte_exact(env: MediaEnv) -> None:
    photo = noisy_jpeg(800, 600)
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, len(photo), filename="p.jpg")
        offset = 0
        for _ in range(4):
            left = len(photo) - offset
            await _cut_patch(env, url, offset, photo[offset:], send=left // 3)
            acknowledged = await _offset_after_cut(http, env, url, offset)
            assert offset < acknowledged <= offset + left // 3  # kept what arrived, no more
            offset = acknowledged
        status, headers, _ = await patch(http, env, url, offset, photo[offset:])
        assert status == 204 and headers["Upload-Offset"] == str(len(photo))
        media_id = headers["Pinhole-Media-Id"]
    assert list((env.ctx.config.data_dir / "tus").iterdir()) == []  # the part file went
    _, media = await get_media(env, media_id)
    code, _, body = await fetch_original(env, media)
    assert code == 200 and body == photo


async def test_an_upload_whose_bytes_are_gone_is_not_made_up(env: MediaEnv) -> None:
    """A part file removed from under its row (by hand, a crash mid-sweep): the PATCH does
    not bring it back as zeros up to the recorded offset; the upload is gone."""
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, 1000)
        status, headers, _ = await patch(http, env, url, 0, b"a" * 400)
        assert status == 204 and headers["Upload-Offset"] == "400"
        part = env.ctx.config.data_dir / "tus" / f"{url.rsplit('/', 1)[1]}.part"
        await asyncio.to_thread(part.unlink)
        status, _, body = await patch(http, env, url, 400, b"b" * 100)
        assert status == 404 and b"not_found" in body, body
        assert not await asyncio.to_thread(part.exists)
        status, _ = await head(http, env, url)
        assert status == 404


async def test_protocol_errors(env: MediaEnv) -> None:
    photo = noisy_jpeg(300, 200)
    async with aiohttp.ClientSession() as http:
        async with http.options(env.api_url + "/api/v1/uploads") as r:
            assert r.status == 204
            assert r.headers["Tus-Version"] == "1.0.0"
            assert set(r.headers["Tus-Extension"].split(",")) == {
                "creation", "termination", "expiration", "checksum"
            }  # fmt: skip
            assert int(r.headers["Tus-Max-Size"]) == env.media.limits.video_bytes_max
        async with http.post(
            env.api_url + "/api/v1/uploads", headers={**TUS, "Upload-Length": "5"}
        ) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
            assert r.headers["Tus-Resumable"] == "1.0.0"
        bad_version = {**env.auth, "Tus-Resumable": "0.2.2", "Upload-Length": "5"}
        async with http.post(env.api_url + "/api/v1/uploads", headers=bad_version) as r:
            assert r.status == 412
        too_big = {**env.auth, **TUS, "Upload-Length": str(2**40)}
        async with http.post(env.api_url + "/api/v1/uploads", headers=too_big) as r:
            assert r.status == 413
        deferred = {**env.auth, **TUS, "Upload-Defer-Length": "1"}
        async with http.post(env.api_url + "/api/v1/uploads", headers=deferred) as r:
            assert r.status == 400

        url = await create(http, env, len(photo))
        status, _, body = await patch(http, env, url, 7, photo[:10])
        assert status == 409 and b"offset_mismatch" in body
        wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        status, _, body = await patch(
            http, env, url, 0, photo[:1000], **{"Upload-Checksum": f"sha1 {wrong}"}
        )
        assert status == 460 and b"checksum_mismatch" in body
        assert (await head(http, env, url))[1]["Upload-Offset"] == "0"
        right = base64.b64encode(hashlib.sha1(photo[:1000]).digest()).decode()
        status, headers, _ = await patch(
            http, env, url, 0, photo[:1000], **{"Upload-Checksum": f"sha1 {right}"}
        )
        assert status == 204 and headers["Upload-Offset"] == "1000"
        headers = {**env.auth, **TUS, "Upload-Offset": "1000", "Content-Type": "text/plain"}
        async with http.patch(url, data=b"x", headers=headers) as r:
            assert r.status == 415
        async with http.delete(url, headers={**env.auth, **TUS}) as r:
            assert r.status == 204
        assert (await head(http, env, url))[0] == 404
        upload_id = url.rsplit("/", 1)[1]
        assert not (env.api.data_dir / "tus" / f"{upload_id}.part").exists()


async def test_an_expired_upload_answers_410_and_is_reclaimed(env: MediaEnv) -> None:
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, 5000)
        status, _, _ = await patch(http, env, url, 0, b"\xff\xd8\xff" + b"\0" * 97)
        assert status == 204
        upload_id = url.rsplit("/", 1)[1]
        part = env.api.data_dir / "tus" / f"{upload_id}.part"
        assert part.stat().st_size == 100
        await tus_store.update(env.ctx.db, upload_id, expires_unix_s=time.time() - 1)
        assert (await head(http, env, url))[0] == 410
        assert await tus.sweep_once(env.ctx) == 1
        assert not part.exists() and await tus_store.get(env.ctx.db, upload_id) is None
        assert (await head(http, env, url))[0] == 404


async def test_a_rejected_file_completed_by_tus_leaves_nothing(env: MediaEnv) -> None:
    garbage = b"this is not a photo at all" * 100
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, len(garbage), filename="x.jpg")
        status, _, body = await patch(http, env, url, 0, garbage)
        assert status == 415 and b"unsupported_format" in body
        assert (await head(http, env, url))[0] == 404
    assert await media_rows(env) == 0 and live_needles(env) == 0
    assert not list((env.api.data_dir / "tus").glob("*.part"))


async def test_uploads_are_private_to_their_owner(env: MediaEnv, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        url = await create(http, env, 10)
    upload = await tus_store.get(env.ctx.db, url.rsplit("/", 1)[1])
    assert upload is not None and upload.owner_id == int(env.user_id)
    other = tus_store.Upload("f" * 32, 2, 10, 0, "{}", time.time(), time.time() + 60, None)
    assert await tus_store.create(env.ctx.db, other, per_owner_max=1)
    assert not await tus_store.create(
        env.ctx.db,
        tus_store.Upload("e" * 32, 2, 10, 0, "{}", time.time(), time.time() + 60, None),
        per_owner_max=1,
    )
    async with aiohttp.ClientSession() as http:
        status, _ = await head(http, env, url.rsplit("/", 1)[0] + "/" + "f" * 32)
        assert status == 404  # user 2's upload does not exist for user 1
