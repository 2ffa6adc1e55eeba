"""What uploads are admitted under, on a real cluster: the daily quota per user (counted in
PostgreSQL, 429 with Retry-After and X-RateLimit-*), the minimum body rate (408, slot and
spool released, tus keeping what arrived), the upload slot around a finishing tus PATCH,
the staging disk's cap (503 with Retry-After, nothing half-written left), and the 503 of
a cluster without a writable volume."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from PIL import Image

from api import tus_store
from api.app import make_app
from api.config import PROCESSES_MAX, ApiConfig
from api.errors import StagingFull, error_middleware
from api.upload_limits import open_shared_staging, open_staging, prepare_shared_staging
from directory.errors import NoWritableVolume
from tests.api.conftest import MediaEnv, media_env
from tests.api.media_files import jpeg_with_gps
from tests.api.test_media import fetch_original, live_needles, media_rows
from tests.conftest import creds
from tests.directory.conftest import PG_URL, pg_schema
from transformer.config import MediaConfig
from transformer.limits import MediaLimits
from transformer.schema import media

TUS = {"Tus-Resumable": "1.0.0"}
DAY_S = 86400


def png(shade: int = 0, size: int = 96) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (shade, 120, 200)).save(out, "PNG")
    return out.getvalue()


async def upload(env: MediaEnv, token: str, data: bytes) -> tuple[int, dict[str, Any], Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="p.png", content_type="application/octet-stream")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            env.api_url + "/api/v1/media/upload",
            data=form,
            headers={"Authorization": f"Bearer {token}"},
        ) as r,
    ):
        return r.status, await r.json(), r.headers


async def tus_create(env: MediaEnv, token: str, length: int) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {token}", **TUS, "Upload-Length": str(length)}
    async with (
        aiohttp.ClientSession() as http,
        http.post(env.api_url + "/api/v1/uploads", headers=headers) as r,
    ):
        body = await r.read()
        return r.status, r.headers, r.headers.get("Location", "") or body.decode()


async def tus_patch(env: MediaEnv, url: str, offset: int, body: bytes) -> tuple[int, Any, bytes]:
    headers = {
        **env.auth,
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    async with aiohttp.ClientSession() as http, http.patch(url, data=body, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def tus_offset(env: MediaEnv, url: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.head(url, headers={**env.auth, **TUS}) as r,
    ):
        assert r.status == 200
        return int(r.headers["Upload-Offset"])


def staged_files(env: MediaEnv, where: str) -> list[Path]:
    directory = env.api.data_dir / where
    return sorted(directory.iterdir()) if directory.exists() else []


SMALL = MediaLimits(image_bytes_max=200_000, video_bytes_max=200_000)
BYTES_A_DAY = 5000


@contextlib.asynccontextmanager
async def pg_env(tmp: Path, **api_fields: Any) -> AsyncIterator[MediaEnv]:
    """The API on PostgreSQL with these [api] fields, uploads of at most 200,000 bytes."""
    async with (
        pg_schema() as schema,
        media_env(
            tmp, api_config=api_fields, database_url=PG_URL, database_schema=schema, limits=SMALL
        ) as env,
    ):
        yield env


# -- quota ----------------------------------------------------------------------------------


async def test_the_daily_count_is_checked_before_the_body_and_slides(tmp_path: Path) -> None:
    async with pg_env(tmp_path, uploads_per_day_max=2) as env:
        await _count_quota(env)


async def _count_quota(env: MediaEnv) -> None:
    for shade in (1, 2):
        status, doc, _ = await upload(env, env.token, png(shade))
        assert status == 201, doc
    # Over the count, even a file over the size limit is refused for the count: the body
    # is never read.
    too_big = b"\0" * (SMALL.image_bytes_max + 1)
    status, doc, headers = await upload(env, env.token, too_big)
    assert (status, doc["error"]["code"]) == (429, "upload_quota_exceeded"), doc
    assert "uploads_per_day_max" in doc["error"]["message"]
    assert headers["X-RateLimit-Limit"] == "2" and headers["X-RateLimit-Remaining"] == "0"
    # The oldest upload leaves the window a day after it was made.
    assert DAY_S - 120 < int(headers["Retry-After"]) <= DAY_S + 1
    assert DAY_S - 120 < int(headers["X-RateLimit-Reset"]) <= DAY_S + 1
    assert staged_files(env, "incoming") == []
    # Quotas are per user.
    _, other = await env.sign_up("other")
    status, _, _ = await upload(env, other, png(3))
    assert status == 201
    # Incomplete tus uploads hold their place in the count.
    status, headers, _ = await tus_create(env, env.token, 1000)
    assert status == 429 and headers["Tus-Resumable"] == "1.0.0"
    # A day later the oldest no longer counts (deleted or not: it was made).
    async with env.ctx.db.transaction() as conn:
        oldest = (
            await conn.execute(
                sa.select(sa.func.min(media.c.media_id)).where(media.c.owner_id == int(env.user_id))
            )
        ).scalar_one()
        await conn.execute(
            media.update()
            .where(media.c.media_id == oldest)
            .values(created_unix_s=time.time() - DAY_S - 1, status="deleted")
        )
    status, _, url = await tus_create(env, env.token, 1000)
    assert status == 201, url
    status, doc, _ = await upload(env, env.token, png(4))
    assert (status, doc["error"]["code"]) == (429, "upload_quota_exceeded")
    assert "uploads_per_day_max" in doc["error"]["message"]


async def test_the_daily_bytes_are_checked_once_the_body_is_known(tmp_path: Path) -> None:
    async with pg_env(tmp_path, upload_bytes_per_day_max=BYTES_A_DAY) as env:
        await _bytes_quota(env)


async def _bytes_quota(env: MediaEnv) -> None:
    first = png(1)
    second = jpeg_with_gps(400, 300)
    assert len(first) < BYTES_A_DAY < len(first) + len(second)
    status, doc, _ = await upload(env, env.token, first)
    assert status == 201, doc
    rows, needles = await media_rows(env), live_needles(env)
    status, doc, headers = await upload(env, env.token, second)
    assert (status, doc["error"]["code"]) == (429, "upload_quota_exceeded"), doc
    assert "upload_bytes_per_day_max" in doc["error"]["message"]
    assert headers["X-RateLimit-Limit"] == str(BYTES_A_DAY)
    assert int(headers["X-RateLimit-Remaining"]) == BYTES_A_DAY - len(first)
    assert int(headers["Retry-After"]) > DAY_S - 120
    # Refused after it was spooled: nothing of it is stored or staged.
    assert (await media_rows(env), live_needles(env)) == (rows, needles)
    assert staged_files(env, "incoming") == [] and env.ctx.staging.used_bytes == 0
    # tus declares its length up front: refused at creation.
    status, headers, body = await tus_create(env, env.token, BYTES_A_DAY - len(first) + 1)
    assert status == 429 and "upload_bytes_per_day_max" in body, body
    status, _, url = await tus_create(env, env.token, BYTES_A_DAY - len(first))
    assert status == 201
    # ... and an incomplete one holds its bytes until it completes or expires.
    status, doc, _ = await upload(env, env.token, b"\xff\xd8\xff")
    assert (status, doc["error"]["code"]) == (429, "upload_quota_exceeded")
    upload_id = url.rsplit("/", 1)[1]
    await tus_store.update(env.ctx.db, upload_id, expires_unix_s=time.time() - 1)
    status, doc, _ = await upload(env, env.token, b"\xff\xd8\xff")
    assert (status, doc["error"]["code"]) == (422, "corrupt_file")  # past the quota


# -- the body's minimum rate ---------------------------------------------------------------


async def trickle(env: MediaEnv, head: bytes, first: bytes) -> tuple[int, dict[str, Any], int]:
    """Sends `head` and `first`, then a byte every 50 ms until the server answers;
    (status, JSON body, body bytes sent)."""
    port = int(env.api_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    writer.write(head + first)
    sent = len(first)
    answer = asyncio.create_task(_response(reader))
    try:
        while not answer.done():
            assert loop.time() < deadline, "the server never cut the body"
            writer.write(b"\0")
            await writer.drain()
            sent += 1
            await asyncio.wait({answer}, timeout=0.05)
        status, doc = await answer
    finally:
        writer.close()
    return status, doc, sent


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
    return int(lines[0].split()[1]), json.loads(await reader.readexactly(length))


async def test_a_trickling_body_is_cut_and_gives_everything_back(tmp_path: Path) -> None:
    async with pg_env(
        tmp_path, upload_body_rate_bytes_per_s_min=2000, upload_body_rate_grace_s=0.3
    ) as env:
        await _trickles(env)


async def _trickles(env: MediaEnv) -> None:
    head = (
        b"POST /api/v1/media/upload HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {env.token}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n"
    )
    first = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    status, doc, _ = await trickle(env, head, first + b"\xff\xd8\xff" + b"\0" * 5000)
    assert (status, doc["error"]["code"]) == (408, "body_too_slow"), doc
    assert "upload_body_rate_bytes_per_s_min" in doc["error"]["message"]
    assert env.ctx.uploads_inflight == 0
    assert staged_files(env, "incoming") == [] and env.ctx.staging.used_bytes == 0
    assert await media_rows(env) == 0

    # tus keeps what arrived: the upload resumes from it and completes byte-exact.
    photo = jpeg_with_gps(400, 300)
    status, _, url = await tus_create(env, env.token, len(photo))
    assert status == 201
    path = url.split("/", 3)[3]
    head = (
        f"PATCH /{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {env.token}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(photo)}\r\n\r\n"
    ).encode()
    status, doc, _ = await trickle(env, head, photo[:3000])
    assert (status, doc["error"]["code"]) == (408, "body_too_slow"), doc
    assert env.ctx.uploads_inflight == 0
    offset = await tus_offset(env, url)
    assert offset >= 3000  # what arrived was kept
    part = env.api.data_dir / "tus" / f"{url.rsplit('/', 1)[1]}.part"
    assert part.stat().st_size == offset == env.ctx.staging.used_bytes
    # What the trickle added were zeros, not the photo: resume from the photo's 3000th byte.
    async with env.ctx.db.transaction() as conn:
        await conn.exec_driver_sql('UPDATE tus_uploads SET "offset" = 3000')
    status, headers, body = await tus_patch(env, url, 3000, photo[3000:])
    assert status == 204, body
    code, _, original = await fetch_original(env, await _media(env, headers["Pinhole-Media-Id"]))
    assert code == 200 and original == photo
    assert env.ctx.staging.used_bytes == 0 and not part.exists()


async def _media(env: MediaEnv, media_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{env.api_url}/api/v1/media/{media_id}", headers=env.auth) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


# -- slots ----------------------------------------------------------------------------------


async def test_the_finishing_patch_ingests_inside_an_upload_slot(tmp_path: Path) -> None:
    async with pg_env(tmp_path, uploads_inflight_max=1) as env:
        await _finishing_patch(env)


async def _finishing_patch(env: MediaEnv) -> None:
    photo = png(9)
    status, _, url = await tus_create(env, env.token, len(photo))
    assert status == 201
    # Every byte arrived before (its ingest then found no writable volume, say): only the
    # ingest is left, for an empty PATCH at the final offset.
    upload_id = url.rsplit("/", 1)[1]
    (env.api.data_dir / "tus" / f"{upload_id}.part").write_bytes(photo)
    await tus_store.update(env.ctx.db, upload_id, offset=len(photo))
    with env.ctx.upload_slot():
        status, headers, body = await tus_patch(env, url, len(photo), b"")
        assert (status, json.loads(body)["error"]["code"]) == (503, "busy")
        assert headers["Retry-After"] == "1"
        assert await media_rows(env) == 0
    status, headers, _ = await tus_patch(env, url, len(photo), b"")
    assert status == 204 and headers["Pinhole-Media-Id"]
    assert await media_rows(env) == 1


# -- staging --------------------------------------------------------------------------------


async def test_the_staging_cap_refuses_what_would_pass_it(tmp_path: Path) -> None:
    async with pg_env(tmp_path, staging_bytes_max=250_000) as env:
        await _staging_cap(env)


async def _staging_cap(env: MediaEnv) -> None:
    status, _, first = await tus_create(env, env.token, 200_000)
    assert status == 201
    status, _, second = await tus_create(env, env.token, 200_000)
    assert status == 201  # a creation needs the room now, it does not reserve it
    status, _, _ = await tus_patch(env, first, 0, b"\xff\xd8\xff" + b"\0" * 149_997)
    assert status == 204 and env.ctx.staging.used_bytes == 150_000
    # A creation, a PATCH and a multipart upload that would pass 250,000 bytes: 503.
    status, headers, body = await tus_create(env, env.token, 150_000)
    assert status == 503 and "staging_full" in body and int(headers["Retry-After"]) > 0
    status, headers, body = await tus_patch(env, second, 0, b"\0" * 150_000)
    assert status == 503 and json.loads(body)["error"]["code"] == "staging_full"
    assert await tus_offset(env, second) == 0
    noise = Image.frombytes("RGB", (250, 250), random.Random(1).randbytes(250 * 250 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    big = out.getvalue()
    assert 100_000 < len(big) < 200_000, len(big)
    status, doc, headers = await upload(env, env.token, big)
    assert (status, doc["error"]["code"]) == (503, "staging_full"), doc
    assert "staging_bytes_max" in doc["error"]["message"] and headers["Retry-After"]
    # Nothing half-written stays, and the count is exact.
    assert staged_files(env, "incoming") == []
    assert env.ctx.staging.used_bytes == 150_000
    assert sum(p.stat().st_size for p in staged_files(env, "tus")) == 150_000
    # Abandoning the first upload frees its room.
    async with (
        aiohttp.ClientSession() as http,
        http.delete(first, headers={**env.auth, **TUS}) as r,
    ):
        assert r.status == 204
    assert env.ctx.staging.used_bytes == 0
    status, doc, _ = await upload(env, env.token, big)
    assert status == 201, doc
    assert env.ctx.staging.used_bytes == 0


def test_staging_is_measured_at_start(tmp_path: Path) -> None:
    config = ApiConfig(data_dir=tmp_path)
    (tmp_path / "tus").mkdir()
    (tmp_path / "incoming").mkdir()
    (tmp_path / "tus" / "a.part").write_bytes(b"x" * 300)
    (tmp_path / "tus" / "b.part").write_bytes(b"x" * 200)
    (tmp_path / "incoming" / "left.upload").write_bytes(b"x" * 1000)
    staging = open_staging(config)
    assert staging.used_bytes == 500 and staging.max_bytes == config.staging_bytes_max
    assert list((tmp_path / "incoming").iterdir()) == []  # a stopped process's spools
    assert open_staging(ApiConfig(data_dir=tmp_path / "absent")).used_bytes == 0


def test_the_processes_of_a_data_dir_share_one_staging_count(tmp_path: Path) -> None:
    config = ApiConfig(data_dir=tmp_path, processes=2, staging_bytes_max=2000)
    (tmp_path / "tus").mkdir()
    (tmp_path / "incoming").mkdir()
    (tmp_path / "tus" / "a.part").write_bytes(b"x" * 300)
    (tmp_path / "incoming" / "left.upload").write_bytes(b"x" * 1000)
    prepare_shared_staging(config)
    assert list((tmp_path / "incoming").iterdir()) == []
    zero, one = open_shared_staging(config, 0), open_shared_staging(config, 1)
    assert zero.used_bytes == one.used_bytes == 300  # measured once, by the starter
    zero.reserve(1000)  # process 0 receives a chunk of an upload...
    assert one.used_bytes == 1300
    with pytest.raises(StagingFull):
        one.reserve(701)  # ...which process 1 sees at once
    one.release(1300)  # process 1 completes the upload and removes its file
    assert zero.used_bytes == one.used_bytes == 0
    one.reserve(2000)
    assert zero.statistics().used_bytes == 2000
    # A fresh start measures again, whatever the slots held.
    prepare_shared_staging(config)
    assert open_shared_staging(config, 1).used_bytes == 300
    with pytest.raises(ValueError, match="process index"):
        open_shared_staging(config, PROCESSES_MAX)


def test_limits_are_validated() -> None:
    for bad in (
        {"upload_body_rate_grace_s": 0},
        {"upload_body_rate_bytes_per_s_min": 0},
        {"uploads_per_day_max": 0},
        {"upload_bytes_per_day_max": 0},
        {"staging_bytes_max": 0},
        {"header_bytes_max": 0},
        {"tus_metadata_bytes_max": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ApiConfig(**bad)
    media = MediaConfig(limits=MediaLimits(image_bytes_max=300_000, video_bytes_max=300_000))
    with pytest.raises(ValueError, match="staging_bytes_max"):
        make_app(ApiConfig(staging_bytes_max=299_999), media, credentials=creds(b"x" * 32, "api"))
    make_app(ApiConfig(staging_bytes_max=300_000), media, credentials=creds(b"x" * 32, "api"))


# -- no writable volume -----------------------------------------------------------------------


async def test_no_writable_volume_is_a_503_with_what_the_error_says() -> None:
    async def old(request: web.Request) -> web.Response:
        raise NoWritableVolume("no writable volume took key 1/0")

    async def new(request: web.Request) -> web.Response:
        raise NoWritableVolume("every volume is full; more are being added", retry_after_s=42.5)

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/old", old)
    app.router.add_get("/new", new)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/old") as r:
                doc = await r.json()
                assert (r.status, doc["error"]["code"]) == (503, "no_writable_volume")
                assert r.headers["Retry-After"] == "10"
                assert doc["error"]["message"] == "no writable volume took key 1/0"
            async with http.get(base + "/new") as r:
                doc = await r.json()
                assert r.status == 503 and r.headers["Retry-After"] == "43"
                assert doc["error"]["message"] == "every volume is full; more are being added"
    finally:
        await runner.cleanup()
