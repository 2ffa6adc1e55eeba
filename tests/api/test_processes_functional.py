"""[api] processes = 2 through the real command (`pinhole api serve`, ops/api_processes.py)
on PostgreSQL and Redis: both processes answer on the one port, an account and a session
made on one work on the other, one tus upload PATCHed from both at once keeps exactly the
bytes of the writer that holds it (the other answers 409 `upload_locked`, having written
nothing), the staging count is the same from both; and without Redis the command refuses
to start, naming the setting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.credentials import Credentials, Purpose, ensure_secret_file, load_secret
from tests.api.conftest import sign_up
from tests.directory.conftest import PG_URL, pg_schema
from tests.feed.conftest import REDIS_URL, drop_keys, redis_store

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parents[2]
START_S_MAX = 60.0
# Fresh connections until one lands on the process wanted: the kernel spreads them by a
# hash of the client's port, so 200 tries miss one of two processes with odds of 2^-200.
CONNECT_TRIES_MAX = 200
TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1 << 20
LISTENING = re.compile(rb"api listening on (http://\S+)/api/v1 \(2 processes\)")
UNREACHABLE = "http://127.0.0.1:9"


@dataclass
class Api:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    secret: bytes


def _argv(config: Path, tmp: Path) -> list[str]:
    return [
        sys.executable, "-m", "ops.cli", "--config", str(config), "api", "serve",
        "--host", "127.0.0.1", "--port", "0", "--data", str(tmp / "api"),
        "--media-data", str(tmp / "media"), "--directory-url", UNREACHABLE,
        "--router-url", UNREACHABLE, "--secret-file", str(ensure_secret_file(tmp / "secret")),
        "--log-level", "warning",
    ]  # fmt: skip


@contextlib.contextmanager
def _running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = await redis_store()  # skips (fails in CI) without Redis
    async with pg_schema() as schema:
        config = tmp_path / "pinhole.toml"
        config.write_text(
            "[api]\nprocesses = 2\n"
            f"[feed]\nredis_url = {json.dumps(REDIS_URL)}\n"
            f"redis_prefix = {json.dumps(store.prefix)}\n"
            f"[media]\ndatabase_url = {json.dumps(PG_URL)}\n"
            f"database_schema = {json.dumps(schema)}\n"
        )
        with _running(_argv(config, tmp_path), tmp_path / "api.log") as proc:
            url = await asyncio.wait_for(
                asyncio.to_thread(_listening, proc, tmp_path / "api.log"), START_S_MAX
            )
            try:
                yield Api(url, tmp_path / "api", proc, _secret(tmp_path))
            finally:
                await drop_keys(store)
                await store.close()


def _secret(tmp: Path) -> bytes:
    return load_secret(secret_file=ensure_secret_file(tmp / "secret"), default_dir=None)


def _listening(proc: subprocess.Popen[bytes], log: Path) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        found = LISTENING.search(line)
        if found:
            return found.group(1).decode()
    raise AssertionError(f"the API exited before listening: {log.read_text()[-3000:]}")


async def _health(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/healthz") as r:
        assert r.status == 200, await r.text()
        doc: dict[str, Any] = await r.json()
        return doc


@contextlib.asynccontextmanager
async def on_process(url: str, index: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose one kept-alive connection is served by process `index`: its
    next request goes there (a refused body closes the connection; then a new one)."""
    for _ in range(CONNECT_TRIES_MAX):
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        if (await _health(http, url))["process"] == index:
            try:
                yield http
            finally:
                await http.close()
            return
        await http.close()
    raise AssertionError(f"no connection reached process {index}")


async def test_both_processes_serve_and_share_accounts(api: Api) -> None:
    pids = set()
    async with on_process(api.url, 0) as zero, on_process(api.url, 1) as one:
        pids.add((await _health(zero, api.url))["pid"])
        pids.add((await _health(one, api.url))["pid"])
        creds = {"username": "ann", "password": "correct horse battery"}
        async with zero.post(api.url + "/api/v1/accounts", json=creds) as r:
            assert r.status == 201, await r.text()
            ann_id = (await r.json())["user_id"]
        async with one.post(api.url + "/api/v1/sessions", json=creds) as r:
            assert r.status == 201, await r.text()
            token = (await r.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for http in (zero, one):
            async with http.get(api.url + "/api/v1/accounts/me", headers=auth) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["user_id"] == ann_id
        # The ids each process makes are its own (one id shard per process).
        bea_id, _ = await sign_up(api.url, "bea")
        assert bea_id != ann_id
    assert len(pids) == 2 and api.proc.pid not in pids


async def _scrape(
    http: aiohttp.ClientSession, url: str, secret: bytes
) -> tuple[Counter[str], dict[str, float]]:
    """(GET /healthz answered per process, pinhole_api_process_scraped per process) from
    one /metrics answer."""
    auth = {"Authorization": Credentials.from_secret(secret).header(Purpose.METRICS)}
    async with http.get(url + "/metrics", headers=auth) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    healthz: Counter[str] = Counter()
    scraped: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "pinhole_api_requests_total" and labels["route"] == "/healthz":
                healthz[labels["process"]] += int(sample.value)
            elif sample.name == "pinhole_api_process_scraped":
                scraped[labels["process"]] = sample.value
            elif sample.name == "pinhole_jobs_queued":  # the database's: once, unlabelled
                assert "process" not in labels
    assert text.count("# TYPE pinhole_api_requests_total") <= 1, text
    return healthz, scraped


async def test_a_scrape_of_either_process_counts_both(api: Api) -> None:
    async with on_process(api.url, 0) as zero, on_process(api.url, 1) as one:
        before, scraped = await _scrape(zero, api.url, api.secret)
        assert scraped == {"0": 1.0, "1": 1.0}
        assert await _scrape(one, api.url, api.secret) == (before, scraped)
        tally: Counter[str] = Counter()
        for index, http, times in ((0, zero, 7), (1, one, 4)):
            for _ in range(times):
                assert (await _health(http, api.url))["process"] == index
                tally[str(index)] += 1
        for http in (zero, one):  # the same counts whichever process answers
            after, scraped = await _scrape(http, api.url, api.secret)
            assert scraped == {"0": 1.0, "1": 1.0}
            assert after - before == tally, (before, after)
        # The families of each process come only with the metrics credential.
        async with one.get(api.url + "/metrics") as r:
            assert r.status == 401


async def _staging_bytes(url: str) -> list[int]:
    """The staging count as process 0 and process 1 see it."""
    out = []
    for index in (0, 1):
        async with on_process(url, index) as http:
            out.append((await _health(http, url))["staging_bytes"])
    return out


async def _slow_body(first: bytes, rest: bytes, go_on: asyncio.Event) -> AsyncIterator[bytes]:
    yield first
    await go_on.wait()
    yield rest


async def _patch(
    http: aiohttp.ClientSession, url: str, auth: dict[str, str], offset: int, body: Any
) -> tuple[int, Any, dict[str, Any] | None]:
    headers = {
        **auth,
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    async with http.patch(url, headers=headers, data=body) as r:
        doc = await r.json() if r.content_type == "application/json" else None
        return r.status, r.headers, doc


async def test_one_upload_patched_from_both_processes(api: Api) -> None:
    _, token = await sign_up(api.url, "cat")
    auth = {"Authorization": f"Bearer {token}"}
    first, rest, later = os.urandom(MiB + MiB // 2), os.urandom(MiB // 2), os.urandom(MiB)
    async with on_process(api.url, 0) as zero, on_process(api.url, 1) as one:
        headers = {**auth, **TUS, "Upload-Length": str(4 * MiB)}
        async with zero.post(api.url + "/api/v1/uploads", headers=headers) as r:
            assert r.status == 201, await r.text()
            url = r.headers["Location"]
        part = api.data_dir / "tus" / f"{url.rsplit('/', 1)[1]}.part"
        # Process 0 takes the upload and holds it mid-body (its first MiB is in the file).
        go_on = asyncio.Event()
        holder = asyncio.create_task(_patch(zero, url, auth, 0, _slow_body(first, rest, go_on)))
        for _ in range(600):
            if part.stat().st_size >= MiB or holder.done():
                break
            await asyncio.sleep(0.05)
        assert not holder.done() and part.stat().st_size >= MiB
        # Process 1: a PATCH at the same offset and a DELETE are refused at once.
        async with on_process(api.url, 1) as other:
            status, _, doc = await _patch(other, url, auth, 0, b"x" * 1000)
        assert status == 409 and doc is not None
        assert doc["error"]["code"] == "upload_locked", doc
        async with (
            on_process(api.url, 1) as other,
            other.delete(url, headers={**auth, **TUS}) as r,
        ):
            assert r.status == 409 and (await r.json())["error"]["code"] == "upload_locked"
        assert not holder.done()  # still holding: the refusals did not wait for it
        go_on.set()
        status, headers, _ = await holder
        assert status == 204 and headers["Upload-Offset"] == str(2 * MiB)
        # The refused requests wrote nothing: the file is the holder's bytes exactly.
        assert part.read_bytes() == first + rest
        # Released: process 1 writes the next chunk.
        assert (await _health(one, api.url))["process"] == 1
        status, headers, _ = await _patch(one, url, auth, 2 * MiB, later)
        assert status == 204 and headers["Upload-Offset"] == str(3 * MiB)
        assert part.read_bytes() == first + rest + later
        # One staging count, whichever process is asked.
        assert await _staging_bytes(api.url) == [3 * MiB, 3 * MiB]
        async with one.head(url, headers={**auth, **TUS}) as r:
            assert r.status == 200 and r.headers["Upload-Offset"] == str(3 * MiB)
        async with zero.delete(url, headers={**auth, **TUS}) as r:
            assert r.status == 204
        assert not part.exists()
        assert await _staging_bytes(api.url) == [0, 0]


def test_two_processes_without_redis_refuse_to_start(tmp_path: Path) -> None:
    config = tmp_path / "pinhole.toml"
    config.write_text("[api]\nprocesses = 2\n")
    done = subprocess.run(
        _argv(config, tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pinhole: api.processes = 2 needs Redis: set [feed] redis_url")
    assert done.stdout == ""
    assert not (tmp_path / "api").exists()  # nothing started, nothing made


def test_a_process_index_beyond_processes_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "pinhole.toml"
    config.write_text(f"[feed]\nredis_url = {json.dumps(REDIS_URL)}\n")
    argv = [*_argv(config, tmp_path), "--process-index", "1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert done.stderr.strip() == "pinhole: --process-index must be below api.processes (1)"


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _gone(pid: int) -> bool:
    """The process has ended (a zombie its new parent has not reaped yet counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def test_the_processes_die_with_their_starter(api: Api) -> None:
    pid = api.proc.pid
    children = await asyncio.to_thread(_children, pid)
    assert len(children) == 2
    os.kill(pid, signal.SIGKILL)  # no chance to stop them itself
    await asyncio.to_thread(api.proc.wait)
    for _ in range(200):
        if all(_gone(c) for c in children):
            break
        await asyncio.sleep(0.05)
    assert all(_gone(c) for c in children)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await _health(http, api.url)
