"""A media cluster for the API tests, all in this process on 127.0.0.1: a directory (SQLite,
growth on), four real store nodes, a router (no cache node: it reads replicas), and the API
on free ports. Workers are started by the tests that need them (`env.start_worker()`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.app import running_api
from api.config import ApiConfig
from api.context import CONTEXT, ApiContext
from common.credentials import Purpose
from router.config import RouterConfig
from router.server import running_router
from tests.conftest import auth, creds
from tests.directory.conftest import SECRET, Cluster, fast_config, running_cluster
from transformer.config import MediaConfig

PASSWORD = "correct horse battery"


# On teardown, in-process workers get this long to finish their job before they are
# cancelled.
WORKER_STOP_S_MAX = 15.0


@dataclass
class MediaEnv:
    api_url: str
    router_url: str
    directory_url: str
    media: MediaConfig
    api: ApiConfig
    ctx: ApiContext
    tmp: Path
    cluster: Cluster
    token: str = ""
    user_id: str = ""
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    workers_stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def sign_up(self, username: str, *, private: bool = False) -> tuple[str, str]:
        """A new account and a session: (user_id, token)."""
        return await sign_up(self.api_url, username, private=private)

    def start_worker(self, **overrides: Any) -> None:
        """Runs one in-process job worker until the test ends."""
        from transformer.worker import run_worker

        config = dataclasses.replace(self.media, **overrides)
        self.workers.append(
            asyncio.create_task(
                run_worker(
                    config, credentials=creds(SECRET, "worker"), name="t", stop=self.workers_stop
                )
            )
        )


@contextlib.asynccontextmanager
async def media_env(
    tmp: Path,
    api_overrides: dict[str, Any] | None = None,
    *,
    api_config: dict[str, Any] | None = None,
    **media_overrides: Any,
) -> AsyncIterator[MediaEnv]:
    """`api_overrides` go to running_api (social=, feed= configs), `api_config` to the
    ApiConfig, the rest to the MediaConfig."""
    api_overrides = api_overrides or {}
    # Every service of these tests shares one event loop with the workers and the tests:
    # on a busy machine a heartbeat can be late by more than the directory tests' 1 s, and
    # nothing here is about node failure.
    directory = fast_config(
        {"data_dir": tmp / "directory"}, writable_volumes_min=2, node_timeout_s=5.0
    )
    async with running_cluster(directory, tmp) as cluster:
        router_config = RouterConfig(port=0, directory_url=cluster.url, lookup_ttl_s=0.2)
        async with running_router(router_config, credentials=creds(SECRET, "router")) as (
            _,
            router_server,
        ):
            router_url = f"http://127.0.0.1:{router_server.port}"
            media = MediaConfig(
                data_dir=tmp / "media",
                directory_url=cluster.url,
                router_url=router_url,
                lease_s=2.0,
                backoff_s_base=0.1,
                backoff_s_max=0.5,
                **media_overrides,
            )
            api = ApiConfig(port=0, data_dir=tmp / "api", **(api_config or {}))
            async with running_api(
                api, media, credentials=creds(SECRET, "api"), **api_overrides
            ) as (app, port):
                env = MediaEnv(
                    api_url=f"http://127.0.0.1:{port}",
                    router_url=router_url,
                    directory_url=cluster.url,
                    media=media,
                    api=api,
                    ctx=app[CONTEXT],
                    tmp=tmp,
                    cluster=cluster,
                )
                await _wait_writable(cluster.url)
                env.user_id, env.token = await env.sign_up("tester")
                try:
                    yield env
                finally:
                    # Workers finish the job in hand and stop; cancelled inside a
                    # transaction, a connection goes to the driver's forced close, which
                    # can stall on SQLite.
                    env.workers_stop.set()
                    if env.workers:
                        _, running = await asyncio.wait(env.workers, timeout=WORKER_STOP_S_MAX)
                        for task in running:
                            task.cancel()
                    for task in env.workers:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task


async def sign_up(api_url: str, username: str, *, private: bool = False) -> tuple[str, str]:
    async with aiohttp.ClientSession() as http:
        creds = {"username": username, "password": PASSWORD}
        async with http.post(api_url + "/api/v1/accounts", json=creds) as r:
            assert r.status == 201, await r.text()
            user_id = (await r.json())["user_id"]
        async with http.post(api_url + "/api/v1/sessions", json=creds) as r:
            assert r.status == 201, await r.text()
            token = (await r.json())["token"]
        if private:
            headers = {"Authorization": f"Bearer {token}"}
            body = {"is_private": True}
            async with http.patch(api_url + "/api/v1/accounts/me", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
    return user_id, token


async def _wait_writable(directory_url: str) -> None:
    async with aiohttp.ClientSession(headers=auth(SECRET, Purpose.ADMIN)) as http:
        for _ in range(200):
            async with http.get(directory_url + "/writable") as r:
                if r.status == 200 and (await r.json()).get("volumes"):
                    return
            await asyncio.sleep(0.05)
    raise AssertionError("the directory grew no writable volume")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[MediaEnv]:
    async with media_env(tmp_path) as e:
        yield e
