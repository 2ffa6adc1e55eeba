"""The web client's two routes (api/web_routes.py) on a real server over a dist directory
made by the test: the page no-cache with its CSP, hashed assets immutable, nothing else
served from the directory, a JSON 503 while the client is not built."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from api.errors import error_middleware
from api.web_routes import add_web_routes, content_security_policy

ROUTER = "http://127.0.0.1:8780"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    dist = tmp_path / "dist"
    app = web.Application(middlewares=[error_middleware])
    add_web_routes(app, photo_url_base=ROUTER, dist=dist)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", dist
    finally:
        await runner.cleanup()


async def test_an_unbuilt_client_answers_503_naming_the_bootstrap(
    served: tuple[str, Path],
) -> None:
    base, _ = served
    async with aiohttp.ClientSession() as http, http.get(base + "/") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "60"
        error = (await r.json())["error"]
    assert error["code"] == "web_client_not_built" and "scripts/bootstrap" in error["message"]


async def test_the_page_and_hashed_assets_and_nothing_else(served: tuple[str, Path]) -> None:
    base, dist = served
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text('<script type="module" src="/assets/app-ABCDEF23.js">')
    (dist / "assets" / "app-ABCDEF23.js").write_text("export {};")
    (dist / "assets" / "style-ABCDEF23.css").write_text("body{}")
    (dist / "assets" / "notes.txt").write_text("not an asset")
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["Content-Security-Policy"] == content_security_policy(ROUTER)
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "app-ABCDEF23.js" in await r.text()
        for name, kind in (
            ("app-ABCDEF23.js", "text/javascript"),
            ("style-ABCDEF23.css", "text/css"),
        ):
            async with http.get(f"{base}/assets/{name}") as r:
                assert r.status == 200 and "Content-Encoding" not in r.headers
                assert r.headers["Content-Type"] == f"{kind}; charset=utf-8"
                assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        # The build's gzip copy goes to a client that accepts gzip.
        (dist / "assets" / "app-ABCDEF23.js.gz").write_bytes(gzip.compress(b"export {};"))
        async with http.get(f"{base}/assets/app-ABCDEF23.js") as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Vary"] == "Accept-Encoding"
            assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert await r.read() == b"export {};"
        for path in (
            "/assets/app-ABCDEF23.js.gz",
            "/assets/notes.txt",
            "/assets/app-ABCDEF24.js",  # the right shape, not built
            "/assets/app.js",
            "/assets/..%2Findex.html",
            "/index.html",
        ):
            async with http.get(base + path) as r:
                assert r.status == 404, path
                assert (await r.json())["error"]["code"] == "not_found"


def test_the_policy_allows_scripts_from_this_origin_only_and_photos_from_the_router() -> None:
    csp = dict(
        part.split(" ", 1)
        for part in content_security_policy("http://photos.example:8780/base/").split("; ")
    )
    assert csp["script-src"] == csp["style-src"] == csp["connect-src"] == "'self'"
    assert csp["img-src"] == "'self' http://photos.example:8780 blob: data:"
    assert csp["frame-ancestors"] == csp["object-src"] == csp["base-uri"] == "'none'"


def test_the_policy_allows_connections_to_the_brokers_websocket_origin_only() -> None:
    def directives(websocket_url: str) -> dict[str, str]:
        policy = content_security_policy("http://photos.example:8780/", websocket_url)
        return dict(part.split(" ", 1) for part in policy.split("; "))

    csp = directives("ws://127.0.0.1:8746")
    assert csp["connect-src"] == "'self' ws://127.0.0.1:8746"
    assert csp["script-src"] == csp["style-src"] == "'self'"
    assert directives("wss://push.example/mqtt")["connect-src"] == "'self' wss://push.example"
    # No broker, or a URL that is not a WebSocket one: this origin alone.
    for url in ("", "http://127.0.0.1:8746", "ws://", "127.0.0.1:8746"):
        assert directives(url)["connect-src"] == "'self'", url
