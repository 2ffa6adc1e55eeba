"""kill -9 of a real store node process under concurrent write load, some of the time in the
middle of a compaction. After every restart, every acknowledged write reads back byte-exact,
every acknowledged delete answers 404, and verify passes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from common import credentials
from common.credentials import Credentials, Purpose
from store.client import needle_path

pytestmark = pytest.mark.crash

KILLS = 24
COMPACTION_EVERY = 3  # every third round kills the node during a compaction
WRITERS = 12
COOKIE = 0x0DDBA11CAFE0F00D


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    def __init__(self, data: Path, secret_file: Path, port: int) -> None:
        self.data = data
        self.secret_file = secret_file
        admin = Credentials.from_secret(secret_file.read_bytes().strip()).header(Purpose.ADMIN)
        self.admin = {"Authorization": admin}
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / "node.log"

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "ops.cli", "store", "serve",
            "--data", str(self.data),
            "--port", str(self.port),
            "--secret-file", str(self.secret_file),
            "--volume-size-max", "4GiB",
            "--create-volume", "1",
            "--log-level", "warning",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited: {self.log.read_text()[-2000:]}")
            try:
                async with http.get(self.url + "/volumes/1", headers=self.admin) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("node did not come up")


class Load:
    """Concurrent writers and deleters; records only what the node acknowledged."""

    def __init__(self, url: str, auth: dict[str, str], rnd: random.Random, next_key: int) -> None:
        self.url = url
        self.auth = auth
        self.rnd = rnd
        self.next_key = next_key
        self.acked: dict[int, bytes] = {}
        self.deleted: set[int] = set()
        # Deletes in flight when the node died: they may or may not have happened.
        self.uncertain: set[int] = set()

    async def writer(self, http: aiohttp.ClientSession, pool: list[int]) -> None:
        while True:
            key = self.next_key
            self.next_key += 1
            data = self.rnd.randbytes(self.rnd.choice([200, 3000, 20_000, 70_000]))
            try:
                async with http.put(
                    self.url + needle_path(1, key, 0, COOKIE), data=data, headers=self.auth
                ) as r:
                    if r.status == 201:
                        self.acked[key] = data
                        pool.append(key)
            except (TimeoutError, aiohttp.ClientError):
                return  # the node died: anything in flight is unacknowledged
            if pool and self.rnd.random() < 0.15:
                victim = pool.pop(self.rnd.randrange(len(pool)))
                self.uncertain.add(victim)
                try:
                    async with http.delete(self.url + f"/n/1/{victim}", headers=self.auth) as r:
                        if r.status == 200:
                            self.deleted.add(victim)
                            self.uncertain.discard(victim)
                except (TimeoutError, aiohttp.ClientError):
                    return


async def _read_back(
    http: aiohttp.ClientSession, url: str, key: int, read: dict[str, str]
) -> tuple[int, bytes]:
    async with http.get(url + needle_path(1, key, 0, COOKIE), headers=read) as r:
        return r.status, await r.read()


async def _verify(http: aiohttp.ClientSession, url: str, auth: dict[str, str]) -> dict[str, object]:
    async with http.post(url + "/volumes/1/verify", headers=auth) as r:
        assert r.status == 202, await r.text()
    while True:
        async with http.get(url + "/volumes/1/verify", headers=auth) as r:
            job = await r.json()
        if job["state"] != "running":
            assert job["state"] == "done", job
            return dict(job["result"])
        await asyncio.sleep(0.05)


@pytest.mark.timeout(600)
async def test_kill_9_under_write_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    secret_file = credentials.ensure_secret_file(tmp_path)
    held = Credentials.from_secret(secret_file.read_bytes().strip())
    auth = {"Authorization": held.header(Purpose.WRITE)}
    admin = {"Authorization": held.header(Purpose.ADMIN)}
    read = {"Authorization": held.header(Purpose.READ)}
    node = NodeProcess(tmp_path / "node", secret_file, _free_port())
    rnd = random.Random(int.from_bytes(os.urandom(4), "big"))
    acked: dict[int, bytes] = {}
    deleted: set[int] = set()
    compaction_kills = 0
    timeout = aiohttp.ClientTimeout(total=20)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            node.start()
            for round_ in range(KILLS):
                await node.wait_ready(http)
                load = Load(node.url, auth, rnd, next_key=(round_ + 1) * 1_000_000)
                pool = list(acked)
                writers = [asyncio.create_task(load.writer(http, pool)) for _ in range(WRITERS)]
                during_compaction = round_ % COMPACTION_EVERY == COMPACTION_EVERY - 1
                await asyncio.sleep(rnd.uniform(0.3, 1.0))
                if during_compaction:
                    async with http.post(
                        node.url + "/volumes/1/compact",
                        json={"bytes_per_s_max": 20_000_000},
                        headers=admin,
                    ) as r:
                        assert r.status == 202, await r.text()
                    await asyncio.sleep(rnd.uniform(0.05, 0.4))
                    async with http.get(node.url + "/volumes/1/compact", headers=admin) as r:
                        if (await r.json())["state"] == "running":
                            compaction_kills += 1
                node.kill9()
                await asyncio.gather(*writers)
                acked.update(load.acked)
                for k in load.deleted | load.uncertain:
                    acked.pop(k, None)
                deleted |= load.deleted
                assert load.acked, "the load acknowledged nothing"

                node.start()
                await node.wait_ready(http)
                last = round_ == KILLS - 1
                sample = [k for k in load.acked if k in acked]
                if last:
                    sample = list(acked)
                else:
                    older = [k for k in acked if k not in load.acked]
                    sample += rnd.sample(older, min(200, len(older)))
                for key in sample:
                    status, body = await _read_back(http, node.url, key, read)
                    assert status == 200 and body == acked[key], (round_, key, status)
                for key in list(deleted)[-100:] if not last else deleted:
                    status, _ = await _read_back(http, node.url, key, read)
                    assert status == 404, (round_, key)
                report = await _verify(http, node.url, admin)
                assert report["ok"], (round_, report)
    finally:
        node.stop()
    assert len(acked) > 1000
    assert compaction_kills >= 3, "too few kills landed during a compaction"
