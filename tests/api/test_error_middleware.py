"""The API's one error middleware answers every package's PinholeError from its status,
code, message and headers(), on a real server; an error of a peer not reached, or one no
class says how to answer, stays a 500 `internal`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from api.errors import NotAuthenticated, QuotaExceeded, StagingFull, error_middleware
from common.errors import PinholeError
from directory.errors import DirectoryError
from feed.errors import BadCursor
from feed.leanredis import LeanRedisError
from social.errors import AuthFailed, RateLimited
from transformer.errors import Rejected

RAISED: dict[str, PinholeError] = {
    "rate_limited": RateLimited("too many likes", limit=5, reset_s=2.5),
    "quota": QuotaExceeded("quota spent", limit=10, remaining=0, reset_s=4.2),
    "auth_failed": AuthFailed("wrong password"),
    "not_authenticated": NotAuthenticated("no token"),
    "staging_full": StagingFull("staging is full"),
    "bad_cursor": BadCursor("not a cursor from this API"),
    "rejected": Rejected("unsupported_format", "not an image", status=415),
    "unreached": DirectoryError(0, "unreachable", "cannot reach the directory"),
    "unclassified": LeanRedisError("connection to Redis lost"),
}


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    def handler(name: str) -> web.Handler:
        async def raise_it(request: web.Request) -> web.Response:
            raise RAISED[name]

        return raise_it

    app = web.Application(middlewares=[error_middleware])
    for name in RAISED:
        app.router.add_get(f"/{name}", handler(name))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def get(base_url: str, name: str) -> tuple[int, dict[str, str], dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/{name}") as r:
        return r.status, dict(r.headers), (await r.json())["error"]


async def test_rate_limits_carry_their_headers(base_url: str) -> None:
    status, headers, error = await get(base_url, "rate_limited")
    assert (status, error["code"]) == (429, "rate_limited")
    assert headers["X-RateLimit-Limit"] == "5"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Reset"] == headers["Retry-After"] == "3"

    status, headers, error = await get(base_url, "quota")
    assert (status, error["code"]) == (429, "upload_quota_exceeded")
    assert headers["X-RateLimit-Limit"] == "10"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Reset"] == headers["Retry-After"] == "5"


async def test_a_401_from_any_package_names_the_bearer_scheme(base_url: str) -> None:
    for name in ("auth_failed", "not_authenticated"):
        status, headers, error = await get(base_url, name)
        assert (status, error["code"]) == (401, "unauthorized")
        assert headers["WWW-Authenticate"] == 'Bearer realm="pinhole"'


async def test_each_package_keeps_its_status_and_code(base_url: str) -> None:
    assert (await get(base_url, "bad_cursor"))[0::2] == (
        400,
        {"code": "bad_cursor", "message": "not a cursor from this API"},
    )
    assert (await get(base_url, "rejected"))[0::2] == (
        415,
        {"code": "unsupported_format", "message": "not an image"},
    )
    status, headers, error = await get(base_url, "staging_full")
    assert (status, error["code"], headers["Retry-After"]) == (503, "staging_full", "30")
    assert "WWW-Authenticate" not in headers


async def test_unreached_and_unclassified_errors_are_internal(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="pinhole.api"):
        for name in ("unreached", "unclassified"):
            status, _, error = await get(base_url, name)
            assert (status, error) == (
                500,
                {"code": "internal", "message": "internal server error"},
            )
    logged = [r for r in caplog.records if r.exc_info]
    assert [type(r.exc_info[1]) for r in logged if r.exc_info] == [DirectoryError, LeanRedisError]
