"""Malformed input answers a 4xx JSON error, never a 5xx, on the real PostgreSQL: ids past
what a BIGINT holds (in paths, JSON bodies and cursors), numbers of thousands of digits in
headers and cursors, deeply nested JSON, NUL and lone surrogates in text, undecodable
multipart names and headers."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from feed import cursor as feed_cursor
from tests.api.conftest import MediaEnv, media_env
from tests.directory.conftest import PG_URL, pg_schema

U64_MAX = "18446744073709551615"
I64_PAST = "9223372036854775808"
DIGITS = "9" * 5000


@pytest.fixture
async def pg_env(tmp_path: Path) -> AsyncIterator[MediaEnv]:
    async with (
        pg_schema() as schema,
        media_env(tmp_path, database_url=PG_URL, database_schema=schema) as env,
    ):
        yield env


async def call(
    env: MediaEnv,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            env.api_url + path,
            json=body,
            data=raw,
            params=params,
            headers={**env.auth, **(headers or {})},
        ) as r,
    ):
        assert r.content_type == "application/json", (method, path, r.status)
        return r.status, await r.json()


async def raw_request(env: MediaEnv, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Sends bytes aiohttp's client would refuse to send; (status, JSON body)."""
    port = int(env.api_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"Host: x\r\nConnection: close\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


def _cursor(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_ids_past_a_bigint_are_not_found_or_bad_requests(pg_env: MediaEnv) -> None:
    env = pg_env
    for big in (U64_MAX, I64_PAST):
        for path in (
            f"/api/v1/users/{big}",
            f"/api/v1/users/{big}/posts",
            f"/api/v1/posts/{big}",
            f"/api/v1/posts/{big}/comments",
            f"/api/v1/media/{big}",
        ):
            status, doc = await call(env, "GET", path)
            assert (status, doc["error"]["code"]) == (404, "not_found"), (path, doc)
        for method, path in (
            ("PUT", f"/api/v1/posts/{big}/like"),
            ("DELETE", f"/api/v1/follows/{big}"),
            ("DELETE", f"/api/v1/blocks/{big}"),
            ("POST", f"/api/v1/follow_requests/{big}/approve"),
        ):
            status, doc = await call(env, method, path)
            assert status == 404, (method, path, doc)
        for method, path, body in (
            ("POST", "/api/v1/follows", {"followee_id": big}),
            ("POST", "/api/v1/blocks", {"user_id": big}),
            ("POST", "/api/v1/posts", {"media_ids": [big]}),
            ("POST", "/api/v1/posts", {"media_ids": ["1"], "tagged_users": [big]}),
            ("PATCH", "/api/v1/accounts/me", {"avatar_media_id": big}),
            ("POST", "/api/v1/notifications/read", {"up_to": big}),
        ):
            status, doc = await call(env, method, path, body=body)
            assert status == 400 and doc["error"]["message"], (path, body, doc)
        for path in ("/api/v1/notifications", f"/api/v1/users/{env.user_id}/followers"):
            status, doc = await call(env, "GET", path, params={"cursor": big})
            assert (status, doc["error"]["code"]) == (400, "bad_cursor"), (path, doc)
    # The largest id a BIGINT holds is an id like any other: nothing there.
    status, _ = await call(env, "GET", "/api/v1/users/9223372036854775807")
    assert status == 404


async def test_feed_cursors_with_numbers_of_any_size_are_bad_cursors(pg_env: MediaEnv) -> None:
    bad: list[dict[str, Any]] = [
        {"v": 1, "a": "12", "o": int(DIGITS[:150])},
        {"v": 1, "a": "12", "o": "5"},
        {"v": 1, "a": "12", "o": True},
        {"v": 1, "a": "12", "o": -1},
        {"v": 1, "a": U64_MAX, "o": 0},
        {"v": 1, "a": "9223372036854775807", "o": 0},  # the read asks for ids < anchor + 1
        {"v": 1, "a": 12, "o": 0},
        {"v": 1, "b": I64_PAST},
        {"v": 1, "b": DIGITS[:150]},
    ]
    for doc in bad:
        text = _cursor(doc)
        with pytest.raises(feed_cursor.BadCursor):
            feed_cursor.decode(text)
        mode = "ranked" if "a" in doc else "chronological"
        status, answer = await call(
            pg_env, "GET", "/api/v1/feed", params={"cursor": text, "mode": mode}
        )
        assert (status, answer["error"]["code"]) == (400, "bad_cursor"), (doc, answer)
    good = feed_cursor.Cursor(anchor=2**63 - 2, offset=feed_cursor.OFFSET_MAX)
    assert feed_cursor.decode(feed_cursor.encode(good)) == good
    status, answer = await call(
        pg_env,
        "GET",
        "/api/v1/feed",
        params={"cursor": feed_cursor.encode(good), "mode": "ranked"},
    )
    assert status == 200 and answer["posts"] == [], answer


async def test_numbers_of_thousands_of_digits_in_headers_and_queries(pg_env: MediaEnv) -> None:
    env = pg_env
    tus = {"Tus-Resumable": "1.0.0"}
    status, doc = await call(
        env, "POST", "/api/v1/uploads", headers={**tus, "Upload-Length": DIGITS}
    )
    assert (status, doc["error"]["code"]) == (400, "bad_request"), doc
    status, doc = await call(
        env, "POST", "/api/v1/uploads", headers={**tus, "Upload-Length": U64_MAX}
    )
    assert status == 400, doc
    async with aiohttp.ClientSession() as http:
        headers = {**env.auth, **tus, "Upload-Length": "100"}
        async with http.post(env.api_url + "/api/v1/uploads", headers=headers) as r:
            assert r.status == 201
            url = r.headers["Location"]
    for offset in (DIGITS, U64_MAX, "-1", "1e3"):
        headers = {
            **tus,
            "Upload-Offset": offset,
            "Content-Type": "application/offset+octet-stream",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.patch(url, data=b"x", headers={**env.auth, **headers}) as r,
        ):
            assert r.status == 400, (offset, await r.text())
            assert (await r.json())["error"]["code"] == "bad_request"
    # A Range header is not read by the API: it changes nothing, whatever its size.
    status, doc = await call(
        env,
        "GET",
        "/api/v1/accounts/me",
        headers={"Range": f"bytes={DIGITS[:4000]}-{DIGITS[:4000]}"},
    )
    assert status == 200 and doc["user_id"] == env.user_id
    for limit in (DIGITS, "١٢", " 5", "0"):
        status, doc = await call(env, "GET", "/api/v1/notifications", params={"limit": limit})
        assert status == 400, (limit, doc)
    # (aiohttp itself answers a request line or header over 8190 bytes, in plain text.)
    long = DIGITS[:3000]
    status, doc = await call(env, "GET", f"/api/v1/media/{long}", params={"wait_s": long})
    assert status in (400, 404), doc
    status, doc = await call(env, "GET", f"/api/v1/uploads/{long}")
    assert status == 404, doc


async def test_deep_json_nul_and_surrogates_are_bad_json(pg_env: MediaEnv) -> None:
    env = pg_env
    depth = 30_000
    nested = b'{"username": ' + b"[" * depth + b"]" * depth + b', "password": "x"}'
    status, doc = await call(
        env,
        "POST",
        "/api/v1/accounts",
        raw=nested,
        headers={"Content-Type": "application/json"},
    )
    assert (status, doc["error"]["code"]) == (400, "bad_json"), doc
    status, doc = await call(
        env, "POST", "/api/v1/accounts", raw=b'{"a": ' + b"{" * depth + b"}" * depth
    )
    assert (status, doc["error"]["code"]) == (400, "bad_json"), doc
    for body in (
        b'{"username": "nul\\u0000name", "password": "correct horse battery"}',
        b'{"username": "lone\\ud800", "password": "correct horse battery"}',
        b'{"username\\u0000": "x", "password": "correct horse battery"}',
    ):
        status, doc = await call(env, "POST", "/api/v1/accounts", raw=body)
        assert (status, doc["error"]["code"]) == (400, "bad_text"), (body, doc)
    for method, path, body in (
        ("PATCH", "/api/v1/accounts/me", b'{"bio": "a\\u0000b"}'),
        ("PATCH", "/api/v1/accounts/me", b'{"full_name": "\\udc80"}'),
        ("POST", "/api/v1/posts", b'{"media_ids": ["1"], "caption": "\\u0000"}'),
        ("POST", "/api/v1/sessions", b'{"username": "tester", "password": "\\u0000"}'),
    ):
        status, doc = await call(env, method, path, raw=body)
        assert (status, doc["error"]["code"]) == (400, "bad_text"), (path, doc)
    status, doc = await call(env, "GET", "/api/v1/accounts/me")
    assert status == 200 and doc["bio"] == "" and doc["full_name"] == "", doc


async def test_undecodable_multipart_names_and_headers_are_4xx(pg_env: MediaEnv) -> None:
    env = pg_env
    auth = f"Authorization: Bearer {env.token}\r\n".encode()

    def form(disposition: bytes, boundary: bytes = b"B") -> tuple[bytes, bytes]:
        head = (
            b"POST /api/v1/media/upload HTTP/1.1\r\n"
            + auth
            + b"Content-Type: multipart/form-data; boundary="
            + boundary
            + b"\r\n"
        )
        body = b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\nhello\r\n--B--\r\n"
        return head, body

    for disposition in (
        b'form-data; name="\xff\xfe"',
        b'form-data; name="file"; filename="\xff\xfe.jpg"',
        b'form-data; name="\xed\xa0\x80"',
        b"form-data; name*=utf-8''%FF%FE",
        b"form-data; name=\"file\"; filename*=utf-8''%C3%28",
        b"form-data; name*=bogus''%FF",
        b'form-data; name="a\x00b"',
        b"attachment; =",
    ):
        status, doc = await raw_request(env, *form(disposition))
        assert status == 400 and doc["error"]["code"] in ("bad_multipart", "bad_text"), (
            disposition,
            doc,
        )
    for boundary in (b"C", b"x" * 80, b""):
        status, doc = await raw_request(env, *form(b'form-data; name="file"', boundary))
        assert status == 400, (boundary, doc)
    head = (
        b"POST /api/v1/media/upload HTTP/1.1\r\n" + auth + b"Content-Type: multipart/form-data\r\n"
    )
    status, doc = await raw_request(env, head, b"--B--\r\n")
    assert status == 400, doc
    status, doc = await raw_request(
        env, b"GET /api/v1/accounts/me HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\xfd\r\n"
    )
    assert (status, doc["error"]["code"]) == (401, "unauthorized"), doc
    tus = b"Tus-Resumable: 1.0.0\r\nUpload-Length: 10\r\n"
    for extra in (b"Upload-Metadata: filename \xff\xfe\r\n", b"Upload-Metadata: \xff a\r\n"):
        status, doc = await raw_request(
            env, b"POST /api/v1/uploads HTTP/1.1\r\n" + auth + tus + extra
        )
        assert status == 400, (extra, doc)
