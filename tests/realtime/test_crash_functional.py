"""kill -9 of the API between commit and publish loses nothing: sends acknowledged by an
API process whose wake-ups never left it (its broker unreachable, the publishes queued in
the process) are all in the catch-up after the process is killed and restarted, exactly
once and in order; a retry of an acknowledged send after the crash makes no second message;
and the restarted API wakes a subscribed client for the next message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.api.conftest import MediaEnv, media_env, sign_up
from tests.conftest import creds
from tests.directory.conftest import SECRET
from tests.realtime.conftest import Broker, free_port, mqtt_client

pytestmark = [pytest.mark.crash, pytest.mark.timeout(90)]
API_START_S_MAX = 30.0
ROOT = Path(__file__).parents[2]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[MediaEnv]:
    async with media_env(tmp_path) as env:
        yield env


@contextlib.contextmanager
def api_process(env: MediaEnv, port: int, realtime_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    credentials = env.tmp / "api-credentials.json"
    if not credentials.exists():
        creds(SECRET, "api").write(credentials)
    argv = [
        sys.executable, "-m", "ops.cli", "api", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--data", str(env.tmp / "api-proc"),
        "--media-data", str(env.tmp / "media-proc"), "--directory-url", env.directory_url,
        "--router-url", env.router_url, "--credentials", str(credentials),
        "--realtime-config", str(realtime_file),
    ]  # fmt: skip
    log = open(env.tmp / "api-proc.log", "ab")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


async def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(int(API_START_S_MAX / 0.1)):
            if process.poll() is not None:
                raise AssertionError((await asyncio.to_thread(log.read_text))[-3000:])
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("the API did not start")


async def call(url: str, token: str, method: str, path: str, body: Any = None, **q: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, json=body, headers=headers, params=q) as r,
    ):
        return r.status, await r.json()


async def test_kill_9_between_commit_and_publish_loses_nothing(
    cluster: MediaEnv, broker: Broker
) -> None:
    env = cluster
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = env.tmp / "api-proc.log"
    # First life: the broker it is told of does not listen, so every wake-up stays queued
    # in the process: killed, they are lost for good.
    unreachable = env.tmp / "realtime-unreachable.toml"
    text = broker.files.realtime_text().replace(
        f"broker_port = {broker.files.port}", f"broker_port = {free_port()}"
    )
    unreachable.write_text(text)
    sent: list[dict[str, Any]] = []
    with api_process(env, port, unreachable) as api:
        await wait_healthy(url, api, log)
        ann_id, ann = await sign_up(url, "ann")
        _, bea = await sign_up(url, "bea")
        first_body = {"recipient_ids": [ann_id], "client_id": "m0", "text": "0"}
        status, first = await call(url, bea, "POST", "/api/v1/messages", first_body)
        assert status == 201, first
        thread = first["thread_id"]
        sent.append(first)
        for i in range(1, 6):
            body = {"client_id": f"m{i}", "text": str(i)}
            status, doc = await call(url, bea, "POST", f"/api/v1/threads/{thread}/messages", body)
            assert status == 201, doc
            sent.append(doc)
        os.kill(api.pid, signal.SIGKILL)
        api.wait()
    # Second life, on the real broker.
    with api_process(env, port, broker.files.realtime_file) as api:
        await wait_healthy(url, api, log)
        status, page = await call(
            url, ann, "GET", f"/api/v1/threads/{thread}/messages", after_seq="0"
        )
        assert status == 200, page
        assert [m["message_id"] for m in page["messages"]] == [d["message_id"] for d in sent]
        assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5, 6]
        # A client that never saw the acknowledgement retries: still one message.
        status, again = await call(
            url, bea, "POST", f"/api/v1/threads/{thread}/messages", {"client_id": "m5", "text": "5"}
        )
        assert status == 200 and again["message_id"] == sent[-1]["message_id"]
        status, grant = await call(url, ann, "POST", "/api/v1/realtime/credentials")
        assert status == 201, grant
        async with mqtt_client(broker.files.port, grant["username"], grant["password"]) as mq:
            assert await mq.subscribe(grant["topics"]["inbox"])
            status, doc = await call(
                url,
                bea,
                "POST",
                f"/api/v1/threads/{thread}/messages",
                {"client_id": "m6", "text": "6"},
            )
            got = await mq.wait_for(lambda t, p: json.loads(p)["message_id"] == doc["message_id"])
            assert [json.loads(p)["seq"] for _, p in got] == [7]
        status, page = await call(
            url,
            ann,
            "GET",
            f"/api/v1/threads/{thread}/messages",
            after_seq=str(sent[-1]["change_seq"]),
        )
        assert [m["seq"] for m in page["messages"]] == [7]
