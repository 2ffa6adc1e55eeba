"""The media API end to end on a real in-process cluster: uploads by multipart become
ready with every variant served by the router, EXIF/GPS never served, every rejection path
answers 4xx JSON and stores nothing, the OpenAPI document covers every route."""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

import aiohttp
from PIL import Image

from api import openapi
from common.credentials import Purpose
from common.photo import Format, photo_path
from tests.api.conftest import MediaEnv, media_env
from tests.api.media_files import jpeg_with_gps
from tests.conftest import auth, creds
from tests.directory.conftest import SECRET
from transformer import media_store, variants
from transformer.limits import MediaLimits

SIZES = variants.PHOTO_SIZES


async def upload(
    env: MediaEnv, data: bytes, *, filename: str = "photo.jpg", **fields: str
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    for k, v in fields.items():
        form.add_field(k, v)
    async with (
        aiohttp.ClientSession() as http,
        http.post(env.api_url + "/api/v1/media/upload", data=form, headers=env.auth) as r,
    ):
        return r.status, await r.json()


async def get_media(env: MediaEnv, media_id: str, wait_s: float = 0) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{env.api_url}/api/v1/media/{media_id}",
            params={"wait_s": str(wait_s)},
            headers=env.auth,
        ) as r,
    ):
        return r.status, await r.json()


async def fetch(url: str, **headers: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def fetch_original(env: MediaEnv, doc: dict[str, Any]) -> tuple[int, str, bytes]:
    """The owner's download of the original, through the API with the owner's session."""
    return await fetch(env.api_url + doc["original_url"], **env.auth)


async def original_photo_url(env: MediaEnv, media_id: str) -> str:
    """The original's URL at the router, with its own cookie (only the database knows it);
    served only with the internal read credential."""
    got = await media_store.get(env.ctx.db, int(media_id))
    assert got is not None
    row, rows = got
    var = next(r for r in rows if r.rendition == 0)
    return env.router_url + photo_path(
        var.volume_id, row.media_id, row.original_cookie, 0, Format(var.fmt)
    )


async def original_gone(env: MediaEnv, media_id: str, url: str | None = None) -> bool:
    """Whether the original's needle reads 404 even for an internal reader."""
    url = url or await original_photo_url(env, media_id)
    status, _, _ = await fetch(url, **auth(SECRET, Purpose.READ))
    return status == 404


def live_needles(env: MediaEnv) -> int:
    return sum(v.needles_live for n in env.cluster.nodes for v in n.node.volumes.values())


async def media_rows(env: MediaEnv) -> int:
    async with env.ctx.db.snapshot() as conn:
        return int((await conn.exec_driver_sql("SELECT count(*) FROM media")).scalar_one())


async def test_a_photo_upload_becomes_ready_with_every_variant_and_no_exif(env: MediaEnv) -> None:
    original = jpeg_with_gps()
    status, doc = await upload(env, original, media_type="image")
    assert status == 201, doc
    assert doc["status"] == "processing" and doc["media_type"] == "image"
    assert (doc["width"], doc["height"]) == (1600, 1200)
    # The original is durable before the answer: its owner downloads it byte-exact now.
    assert doc["original_url"] == f"/api/v1/media/{doc['media_id']}/original"
    got = await fetch_original(env, doc)
    assert got[0] == 200 and got[2] == original

    env.start_worker()
    status, doc = await get_media(env, doc["media_id"], wait_s=10)
    assert status == 200 and doc["status"] == "ready", doc
    assert doc["placeholder"] and len(doc["placeholder"]) >= 6
    names = {str(s) for s in SIZES} | {f"{s}_square" for s in SIZES}
    assert set(doc["variants"]) == names == set(doc["urls"])
    for name, variant in doc["variants"].items():
        size = int(name.split("_")[0])
        if name.endswith("_square"):
            assert (variant["width"], variant["height"]) == (size, size)
        else:
            assert variant["width"] == size and variant["height"] == size * 3 // 4
        assert set(variant["formats"]) == {"avif", "webp", "jpeg"}
        for fmt_name, url in variant["formats"].items():
            code, ctype, body = await fetch(url)
            assert code == 200 and ctype == f"image/{fmt_name}", (url, code, ctype)
            assert b"Exif" not in body and b"pinhole test camera" not in body
            decoded = Image.open(io.BytesIO(body))
            assert decoded.size == (variant["width"], variant["height"])
            assert not decoded.getexif()
    # The negotiated URL picks the best format the client accepts.
    code, ctype, _ = await fetch(doc["urls"]["640"], Accept="image/avif,image/webp,*/*")
    assert (code, ctype) == (200, "image/avif")
    code, ctype, _ = await fetch(doc["urls"]["640"], Accept="image/jpeg")
    assert (code, ctype) == (200, "image/jpeg")


async def test_a_filter_is_applied_server_side(env: MediaEnv) -> None:
    status, doc = await upload(env, jpeg_with_gps(seed=3), filter_id="moon")
    assert status == 201, doc
    env.start_worker()
    status, doc = await get_media(env, doc["media_id"], wait_s=10)
    assert doc["status"] == "ready" and doc["filter_id"] == "moon"
    _, _, body = await fetch(doc["variants"]["320"]["formats"]["jpeg"])
    pixels = Image.open(io.BytesIO(body)).convert("RGB").get_flattened_data()
    # moon is black and white: every pixel grey (JPEG chroma noise aside).
    assert max(max(p) - min(p) for p in pixels) <= 12


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def small_png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


async def test_every_rejection_is_a_4xx_json_and_stores_nothing(env: MediaEnv) -> None:
    good = jpeg_with_gps(400, 300)
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"hello, this is text", {}, 415, "unsupported_format"),
        (b"GIF89a" + b"\0" * 100, {}, 415, "unsupported_format"),
        (good[: len(good) // 2], {}, 422, "corrupt_file"),
        (png_claiming(30000, 30000), {}, 422, "too_many_pixels"),
        (small_png(20), {}, 422, "image_too_small"),
        (good, {"media_type": "video"}, 422, "media_type_mismatch"),
        (good, {"media_type": "sticker"}, 400, "bad_media_type"),
        (good, {"filter_id": "sepia-deluxe"}, 422, "unknown_filter"),
    ]
    for data, fields, want_status, want_code in cases:
        status, doc = await upload(env, data, **fields)
        assert (status, doc["error"]["code"]) == (want_status, want_code), (fields, doc)
        assert doc["error"]["message"]
    async with aiohttp.ClientSession() as http:
        url = env.api_url + "/api/v1/media/upload"
        async with http.post(url, data=b"x") as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
        async with http.post(url, data=b"x", headers=env.auth) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
        form = aiohttp.FormData()
        form.add_field("media_type", "image")
        async with http.post(url, data=form, headers=env.auth) as r:
            assert r.status == 400
        async with http.get(env.api_url + "/api/v1/media/123", headers=env.auth) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        async with http.get(env.api_url + "/api/v1/media/-1", headers=env.auth) as r:
            assert r.status == 404
        async with http.get(env.api_url + "/api/v1/nothing-here") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    assert await media_rows(env) == 0
    assert live_needles(env) == 0


async def test_size_limit_is_413(tmp_path: Any) -> None:
    async with media_env(tmp_path, limits=MediaLimits(image_bytes_max=50_000)) as env:
        status, doc = await upload(env, jpeg_with_gps(1600, 1200))
        assert (status, doc["error"]["code"]) == (413, "file_too_large")
        assert await media_rows(env) == 0 and live_needles(env) == 0


async def test_mutated_images_never_yield_a_5xx_nor_a_stored_needle(env: MediaEnv) -> None:
    rng = random.Random(7)
    seed_files = [jpeg_with_gps(320, 240), small_png(200)]
    accepted = 0
    for i in range(40):
        data = bytearray(rng.choice(seed_files))
        for _ in range(rng.randint(1, 8)):
            where = rng.randrange(len(data))
            if rng.random() < 0.2:
                del data[where:]
                if not data:
                    data = bytearray(b"\0")
            else:
                data[where] ^= 1 << rng.randrange(8)
        before_rows, before_needles = await media_rows(env), live_needles(env)
        status, doc = await upload(env, bytes(data))
        assert status < 500, (i, doc)
        if status == 201:
            accepted += 1
            assert await media_rows(env) == before_rows + 1
        else:
            assert doc["error"]["code"]
            assert (await media_rows(env), live_needles(env)) == (before_rows, before_needles)
    assert accepted < 40


async def test_the_openapi_document_describes_every_route(env: MediaEnv) -> None:
    async with aiohttp.ClientSession() as http, http.get(env.api_url + "/api/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.1") and doc == openapi.document()
    from api.app import make_app

    app = make_app(env.api, env.media, credentials=creds(b"x" * 32, "api"))
    routes = set()
    get_handlers = {}
    listed = []
    for route in app.router.routes():
        assert route.resource is not None
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path == "/" or path.startswith("/assets/"):
            continue  # the web client's page and assets (api/web_routes.py), not the API
        listed.append((path, route.method.lower(), route.handler))
        if route.method == "GET":
            get_handlers[path] = route.handler
    for path, method, handler in listed:
        # aiohttp adds a HEAD beside every GET (same handler); a HEAD of its own is described.
        if not (method == "head" and get_handlers.get(path) is handler):
            routes.add((path, method))
    described = {(p, m) for p, item in doc["paths"].items() for m in item}
    assert routes <= described, routes - described
    assert described <= routes, described - routes
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("summary") and op.get("responses"), (path, method)
