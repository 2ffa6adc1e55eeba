"""The web client, served by the API process (docs/web.md).

`scripts/bootstrap` builds `web/src` with esbuild into `web/dist`: `index.html` and assets
whose names carry a hash of their content (`app-3KQ2ZL7M.js`). So:

- `GET /` answers `index.html` with `Cache-Control: no-cache` (revalidated every load, so
  a rebuild reaches browsers at once) and a strict Content-Security-Policy: scripts and
  styles only from this origin (no inline script, no CDN), images and video also from the
  router that serves the photo URLs, and connections only to this origin and to the
  broker's WebSocket listener (live messages, `[realtime] websocket_url`).
- `GET /assets/{name}` answers a hashed asset `immutable` for a year (its `.gz` copy, made
  by the build, to a client that accepts gzip); a name that is not one (`ASSET_NAME`) or
  not built is a JSON 404 like any unknown route.

The client routes by the URL's fragment (`/#/p/<post id>`), so `/` is the only page. The
files are looked up on a worker thread and sent by `web.FileResponse` (sendfile, its own
stat and open off the event loop). An unbuilt client
answers 503 `web_client_not_built` naming the command that builds it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from api.errors import ApiError, NoSuchResource

DIST_DIR: Final = Path(__file__).resolve().parents[1] / "web" / "dist"
INDEX_FILE: Final = "index.html"
# esbuild's `[name]-[hash]`: the hash is 8 characters of base32.
ASSET_NAME: Final = re.compile(r"^[a-z0-9_]{1,64}-[A-Z2-7]{8}\.(js|css)$")
CONTENT_TYPES: Final = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
ASSET_MAX_AGE_S: Final = 365 * 24 * 3600

_COMMON_HEADERS: Final = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class WebClientNotBuilt(ApiError):
    status = 503
    code = "web_client_not_built"
    retry_after_s = 60.0


def _origin(url: str) -> str:
    """`scheme://host:port` of a URL; "" when it has no scheme or host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def content_security_policy(photo_url_base: str, websocket_url: str = "") -> str:
    """Only this origin, plus the photo router's origin for images and video (the photo
    URLs the API hands out point there) and, for `connect-src`, the origin of the broker's
    WebSocket listener the credentials route names (`[realtime] websocket_url`; nothing
    when there is no broker)."""
    photos = _origin(photo_url_base)
    media = " ".join(filter(None, ["'self'", photos, "blob:", "data:"]))
    live = _origin(websocket_url) if urlsplit(websocket_url).scheme in ("ws", "wss") else ""
    connect = " ".join(filter(None, ["'self'", live]))
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {media}",
            f"media-src {media}",
            f"connect-src {connect}",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def add_web_routes(
    app: web.Application, *, photo_url_base: str, websocket_url: str = "", dist: Path = DIST_DIR
) -> None:
    """Adds `GET /` and `GET /assets/{name}` to the API application. `websocket_url`: the
    broker's WebSocket listener the client connects to ("" without a broker)."""
    csp = content_security_policy(photo_url_base, websocket_url)

    async def index(request: web.Request) -> web.StreamResponse:
        path = dist / INDEX_FILE
        if not await asyncio.to_thread(path.is_file):
            raise WebClientNotBuilt(
                "the web client is not built: run scripts/bootstrap (npm ci, npm run build in web/)"
            )
        return web.FileResponse(
            path,
            headers={
                **_COMMON_HEADERS,
                "Content-Type": "text/html; charset=utf-8",
                "Cache-Control": "no-cache",
                "Content-Security-Policy": csp,
            },
        )

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        match = ASSET_NAME.match(name)
        path = dist / "assets" / name
        if match is None or not await asyncio.to_thread(path.is_file):
            raise NoSuchResource("no such asset")
        return web.FileResponse(
            path,
            headers={
                **_COMMON_HEADERS,
                "Content-Type": CONTENT_TYPES[match.group(1)],
                "Cache-Control": f"public, max-age={ASSET_MAX_AGE_S}, immutable",
            },
        )

    app.router.add_get("/", index)
    app.router.add_get("/assets/{name}", asset)
