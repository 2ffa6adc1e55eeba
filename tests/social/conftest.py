"""The social API tests' cluster and client: the API on a real local cluster (directory,
four stores, router, a media worker), its tables on SQLite or PostgreSQL (the same suite
for both), its feed and rate-limit counters on the real Redis, or on the embedded hot store
and SQL counters (`redis=False`)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from api.app import running_api
from api.config import ApiConfig
from feed.config import FeedConfig
from social.config import SocialConfig
from tests.api.conftest import MediaEnv, media_env
from tests.conftest import creds
from tests.directory.conftest import PG_URL, SECRET, pg_schema
from tests.feed.conftest import REDIS_URL, drop_keys, redis_store


class Client:
    """Calls the API with a session's token (if any), through `api_url` (default: the
    env's API), adding `headers` (a User-Agent, an X-Forwarded-For) to every request."""

    def __init__(
        self,
        env: MediaEnv,
        token: str | None,
        *,
        api_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.env = env
        self.token = token
        self.api_url = api_url or env.api_url
        self.headers = headers or {}

    async def call(
        self, method: str, path: str, body: Any = None, **params: str
    ) -> tuple[int, Any, Any]:
        sent = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        sent.update(self.headers)
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.api_url + path, json=body, params=params, headers=sent) as r,
        ):
            doc = await r.json() if r.content_type == "application/json" else None
            return r.status, doc, r.headers

    async def upload(self, data: bytes, filename: str, **fields: str) -> str:
        """Uploads a file (multipart, with these form fields): the new media's id."""
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename)
        for name, value in fields.items():
            form.add_field(name, value)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.api_url + "/api/v1/media/upload",
                data=form,
                headers={"Authorization": f"Bearer {self.token}"},
            ) as r,
        ):
            assert r.status == 201, await r.text()
            return str((await r.json())["media_id"])

    async def photo(self, shade: int = 10, *, ready: bool = True) -> str:
        out = io.BytesIO()
        Image.new("RGB", (96, 72), (shade, 120, 200)).save(out, "PNG")
        media_id = await self.upload(out.getvalue(), "p.png")
        if not ready:
            return media_id
        status, doc, _ = await self.call("GET", f"/api/v1/media/{media_id}", wait_s="10")
        assert status == 200 and doc["status"] == "ready", doc
        return media_id

    async def post(self, caption: str = "", n: int = 1) -> dict[str, Any]:
        media = [await self.photo(i * 40) for i in range(n)]
        status, doc, _ = await self.call(
            "POST", "/api/v1/posts", {"media_ids": media, "caption": caption}
        )
        assert status == 201, doc
        return dict(doc)

    async def feed_ids(self, limit: int = 50) -> list[str]:
        status, doc, _ = await self.call("GET", "/api/v1/feed", limit=str(limit))
        assert status == 200, doc
        return [p["post_id"] for p in doc["posts"]]

    async def me(self) -> dict[str, Any]:
        status, doc, _ = await self.call("GET", "/api/v1/accounts/me")
        assert status == 200, doc
        return dict(doc)


async def user(env: MediaEnv, name: str, *, private: bool = False) -> tuple[str, Client]:
    user_id, token = await env.sign_up(name, private=private)
    return user_id, Client(env, token)


@dataclasses.dataclass
class SocialEnv:
    """A MediaEnv and the configs its API runs with (for a second API on the same data)."""

    env: MediaEnv
    social: SocialConfig
    feed: FeedConfig

    @contextlib.asynccontextmanager
    async def another_api(self, name: str, **api_fields: Any) -> AsyncIterator[str]:
        """One more API process's app on the same database and Redis (its own data_dir and
        port); yields its URL."""
        config = ApiConfig(port=0, data_dir=self.env.tmp / name, **api_fields)
        async with running_api(
            config,
            self.env.media,
            credentials=creds(SECRET, "api"),
            social=self.social,
            feed=self.feed,
        ) as (_, port):
            yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def social_cluster(
    kind: str,
    tmp: Path,
    *,
    worker: bool,
    redis: bool = True,
    social: SocialConfig | None = None,
) -> AsyncIterator[SocialEnv]:
    """The API on a local cluster, its tables on `kind` ("sqlite" or "postgresql"); with a
    media worker unless `worker` is false."""
    store = await redis_store()
    try:
        feed = FeedConfig(
            redis_url=REDIS_URL if redis else "", redis_prefix=store.prefix, poll_interval_s=0.05
        )
        social = social or SocialConfig(posts_per_day_max=4)
        async with contextlib.AsyncExitStack() as stack:
            database: dict[str, str] = {}
            if kind == "postgresql":
                schema = await stack.enter_async_context(pg_schema())
                database = {"database_url": PG_URL, "database_schema": schema}
            env = await stack.enter_async_context(
                media_env(tmp, {"feed": feed, "social": social}, **database)
            )
            if worker:
                env.start_worker()
            yield SocialEnv(env, social, feed)
    finally:
        await drop_keys(store)
        await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def social_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaEnv]:
    async with social_cluster(request.param, tmp_path, worker=True) as cluster:
        yield cluster.env
