"""The f4 name node: the store's read and delete protocol over a migrated volume, deletes
that arrive while a volume migrates, and a real `pinhole f4 name serve` process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import urllib3

from common.credentials import Credentials, Purpose
from common.leanhttp.client import LeanHTTPClient
from f4.blob import BlobId
from f4.cell import Cell
from f4.config import F4Config
from f4.name_server import running_name_node
from replica.errors import NeedleAbsent, ReplicasUnavailable
from replica.read import needle_etag, read_from_replicas
from store.storage import OsStorage
from store.volume_loading import open_volume
from tests.f4.helpers import LIMITS, SMALL_BLOCK, Blobs, random_blobs, sealed_volume

SECRET = b"n" * 32
VID = 7


@pytest.fixture
def blobs() -> Blobs:
    return random_blobs(random.Random(4), 60)


def _config(tmp: Path, **overrides: object) -> F4Config:
    return F4Config(
        cell_root=tmp / "cell",
        haystack_dir=tmp / "hay",
        block_bytes=SMALL_BLOCK,
        age_s_min=0.0,
        name_port=0,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def config(tmp_path: Path, blobs: Blobs) -> F4Config:
    (tmp_path / "hay").mkdir()
    sealed_volume(tmp_path / "hay", VID, blobs)
    return _config(tmp_path)


def _migrate(config: F4Config) -> dict[str, object]:
    cell = Cell(config)
    try:
        return cell.migrate(VID)
    finally:
        cell.close()


@pytest.fixture
async def served(config: F4Config) -> AsyncIterator[str]:
    _migrate(config)
    creds = Credentials.for_service(SECRET, "f4-name")
    async with running_name_node(config, credentials=creds) as (_, server):
        yield f"http://127.0.0.1:{server.port}"


def _headers(purpose: Purpose) -> tuple[tuple[str, str], ...]:
    return (("Authorization", Credentials.from_secret(SECRET).header(purpose)),)


async def test_reads_match_the_store_byte_for_byte_and_etag(
    served: str, blobs: Blobs, client: LeanHTTPClient
) -> None:
    for (key, alt), (cookie, data) in list(blobs.items())[:20]:
        url = f"{served}/n/{VID}/{key}/{alt}/{cookie:016x}"
        resp = await client.request("GET", url, headers=_headers(Purpose.READ))
        assert resp.status == 200
        assert resp.body == data
        assert resp.headers["etag"] == needle_etag(key, alt, cookie, data)
        # what caches and routers run: the ETag is checked against the body
        read = await read_from_replicas(
            client, [served], VID, key, alt, cookie, headers=_headers(Purpose.READ),
            timeout_s=5.0,
        )  # fmt: skip
        assert read.data == data and not read.bad
    (key, alt), (cookie, data) = next(iter(blobs.items()))
    url = f"{served}/n/{VID}/{key}/{alt}/{cookie:016x}"
    ranged = await client.request(
        "GET", url, headers=(*_headers(Purpose.READ), ("Range", "bytes=1-3"))
    )
    assert ranged.status == 206 and ranged.body == data[1:4]
    etag = needle_etag(key, alt, cookie, data)
    cond = await client.request(
        "GET", url, headers=(*_headers(Purpose.READ), ("If-None-Match", etag))
    )
    assert cond.status == 304


async def test_absent_deleted_and_wrong_cookie_are_one_answer(
    served: str, blobs: Blobs, client: LeanHTTPClient
) -> None:
    (key, alt), (cookie, _) = next(iter(blobs.items()))
    read = _headers(Purpose.READ)
    wrong = await client.request(
        "GET", f"{served}/n/{VID}/{key}/{alt}/{cookie ^ 1:016x}", headers=read
    )
    absent = await client.request(
        "GET", f"{served}/n/{VID}/{key + 99999}/{alt}/{cookie:016x}", headers=read
    )
    deleted = await client.request(
        "DELETE", f"{served}/n/{VID}/{key}", headers=_headers(Purpose.WRITE)
    )
    assert deleted.status == 200 and b'"deleted":1' in deleted.body.replace(b" ", b"")
    gone = await client.request("GET", f"{served}/n/{VID}/{key}/{alt}/{cookie:016x}", headers=read)
    assert wrong.status == absent.status == gone.status == 404
    assert wrong.body == absent.body == gone.body
    with pytest.raises(NeedleAbsent):
        await read_from_replicas(
            client, [served], VID, key, alt, cookie, headers=read, timeout_s=5.0
        )
    other = await client.request(
        "GET", f"{served}/n/{VID + 1}/{key}/{alt}/{cookie:016x}", headers=read
    )
    assert other.status == 404 and b"volume_not_found" in other.body


async def test_each_route_takes_its_own_credential(
    served: str, blobs: Blobs, client: LeanHTTPClient
) -> None:
    (key, alt), (cookie, _) = next(iter(blobs.items()))
    url = f"{served}/n/{VID}/{key}/{alt}/{cookie:016x}"
    assert (await client.request("GET", url)).status == 401
    assert (await client.request("GET", url, headers=_headers(Purpose.WRITE))).status == 401
    no_delete = await client.request(
        "DELETE", f"{served}/n/{VID}/{key}", headers=_headers(Purpose.READ)
    )
    assert no_delete.status == 401
    assert (await client.request("GET", f"{served}/status")).status == 401
    status = await client.request("GET", f"{served}/status", headers=_headers(Purpose.ADMIN))
    assert status.status == 200 and b'"volumes_served":[7]' in status.body.replace(b" ", b"")
    read = _headers(Purpose.READ)
    bad = await client.request("GET", f"{served}/n/{VID}/x/1/00", headers=read)
    assert bad.status == 400 and b"bad_request" in bad.body  # as a store answers


async def test_a_delete_before_the_keys_exist_is_applied_by_the_migration(
    config: F4Config,
    blobs: Blobs,
    client: LeanHTTPClient,
) -> None:
    """The directory delivers deletes to the cell from `begin` on, possibly before the
    migration wrote the blob's key: the tombstone makes the migration destroy it."""
    (key, alt), (cookie, _) = next(iter(blobs.items()))
    creds = Credentials.for_service(SECRET, "f4-name")
    async with running_name_node(config, credentials=creds) as (node, _server):
        assert await node.delete(VID, key, None) == 0  # no index yet: a tombstone only
    probe = Cell(config)
    try:
        assert probe.keys.tombstones(VID) == [(key, None)]
    finally:
        probe.close()
    mark = _migrate(config)
    assert mark["deleted_while_migrating"] == 1
    cell = Cell(config)
    try:
        assert cell.keys.get(BlobId(VID, key, alt)) is None
        assert cell.keys.count() == len(blobs) - 1
    finally:
        cell.close()
    async with running_name_node(config, credentials=creds) as (node, server):
        resp = await client.request(
            "GET",
            f"http://127.0.0.1:{server.port}/n/{VID}/{key}/{alt}/{cookie:016x}",
            headers=_headers(Purpose.READ),
        )
        assert resp.status == 404


def test_a_haystack_delete_after_the_keys_were_written_is_reconciled(
    config: F4Config, blobs: Blobs
) -> None:
    """A delete that reached the Haystack volume after the migration read it (written,
    not yet verified) destroys the blob's key before the volume is verified."""
    from f4.encoder import Migration
    from f4.needle_source import NeedleSource

    cell = Cell(config)
    source = NeedleSource(config.haystack_dir, VID)
    try:
        Migration(
            source, cell.store, cell.keys, config.work_dir, block_bytes=config.block_bytes
        ).run()
    finally:
        source.close()
    (key, alt), _ = list(blobs.items())[5]
    vol = open_volume(OsStorage(config.haystack_dir), VID, LIMITS)
    try:
        vol.delete(key, alt).result()
    finally:
        vol.close()
    try:
        mark = cell.migrate(VID)
        assert mark["deleted_while_migrating"] == 1
        assert mark["blobs_checked"] == len(blobs) - 1
        assert cell.keys.get(BlobId(VID, key, alt)) is None
    finally:
        cell.close()


def _serve(config_file: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "--config", str(config_file), "f4", "name", "serve",
         "--port", str(port), "--secret-file", str(config_file.parent / "secret")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _get(http: urllib3.PoolManager, url: str) -> urllib3.BaseHTTPResponse | None:
    try:
        return http.request("GET", url, headers=dict(_headers(Purpose.READ)), retries=False)
    except urllib3.exceptions.HTTPError:
        return None


def test_the_process_serves_and_comes_back_after_kill_9(
    tmp_path: Path, config: F4Config, blobs: Blobs
) -> None:
    _migrate(config)
    (tmp_path / "secret").write_bytes(SECRET)
    config_file = tmp_path / "pinhole.toml"
    config_file.write_text(
        f'[f4]\ncell_root = "{config.cell_root}"\nhaystack_dir = "{config.haystack_dir}"\n'
        f"block_bytes = {SMALL_BLOCK}\n"
    )
    port = _free_port()
    http = urllib3.PoolManager()
    (key, alt), (cookie, data) = next(iter(blobs.items()))
    url = f"http://127.0.0.1:{port}/n/{VID}/{key}/{alt}/{cookie:016x}"
    for _ in range(2):
        proc = _serve(config_file, port)
        try:
            deadline = time.monotonic() + 20
            resp = _get(http, url)
            while resp is None and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
                resp = _get(http, url)
            assert resp is not None, "the name node did not answer"
            assert resp.status == 200 and resp.data == data
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_volume_is_served_the_moment_its_mark_exists(
    config: F4Config,
    blobs: Blobs,
    client: LeanHTTPClient,
) -> None:
    """Until then readers are told the volume is not here (volume_not_found, in
    X-Pinhole-Error too), so they try another replica and never remember the blob as
    absent; once the migration wrote its mark, the very next read is served."""
    (key, alt), (cookie, data) = next(iter(blobs.items()))
    creds = Credentials.for_service(SECRET, "f4-name")
    async with running_name_node(config, credentials=creds) as (_, server):
        base = f"http://127.0.0.1:{server.port}"
        url = f"{base}/n/{VID}/{key}/{alt}/{cookie:016x}"
        before = await client.request("GET", url, headers=_headers(Purpose.READ))
        assert before.status == 404
        assert before.headers["x-pinhole-error"] == "volume_not_found"
        with pytest.raises(ReplicasUnavailable):
            await read_from_replicas(
                client, [base], VID, key, alt, cookie, headers=_headers(Purpose.READ),
                timeout_s=5.0,
            )  # fmt: skip
        _migrate(config)
        after = await client.request("GET", url, headers=_headers(Purpose.READ))
        assert after.status == 200 and after.body == data
        absent = await client.request(
            "GET", f"{base}/n/{VID}/{key}/{alt}/{cookie ^ 1:016x}", headers=_headers(Purpose.READ)
        )
        assert absent.status == 404 and absent.headers["x-pinhole-error"] == "not_found"


def _samples(text: bytes) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.name: s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


async def test_metrics_count_reads_absences_and_deletes(
    served: str, blobs: Blobs, client: LeanHTTPClient
) -> None:
    items = list(blobs.items())
    read = _headers(Purpose.READ)
    for (key, alt), (cookie, _) in items[:5]:
        url = f"{served}/n/{VID}/{key}/{alt}/{cookie:016x}"
        assert (await client.request("GET", url, headers=read)).status == 200
    (key, alt), (cookie, _) = items[5]
    wrong = f"{served}/n/{VID}/{key}/{alt}/{cookie ^ 1:016x}"
    assert (await client.request("GET", wrong, headers=read)).status == 404
    write = _headers(Purpose.WRITE)
    gone = await client.request("DELETE", f"{served}/n/{VID}/{key}", headers=write)
    assert gone.status == 200
    assert (await client.request("GET", f"{served}/metrics", headers=read)).status == 401
    resp = await client.request("GET", f"{served}/metrics", headers=_headers(Purpose.METRICS))
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
    got = _samples(resp.body)
    served_bytes = sum(len(d) for _, (_, d) in items[:5])
    assert got["pinhole_f4_name_reads_total"] == 6
    assert got["pinhole_f4_name_reads_absent_total"] == 1
    assert got["pinhole_f4_name_healthy_reads_total"] == 5
    assert got["pinhole_f4_name_degraded_reads_total"] == 0
    assert got["pinhole_f4_name_bytes_served_total"] == served_bytes
    assert got["pinhole_f4_name_bytes_read_total"] > served_bytes  # whole chunks + their sums
    assert got["pinhole_f4_name_deletes_total"] == 1
    assert got["pinhole_f4_name_keys_destroyed_total"] == sum(1 for k, _ in blobs if k == key)
    assert got["pinhole_f4_name_key_lookups_total"] == 5  # the wrong cookie needs no key
    assert 1 <= got["pinhole_f4_name_key_lookup_batches_total"] <= 5
    assert got["pinhole_f4_name_volumes_served"] == 1


async def test_status_carries_the_heartbeat_when_there_is_a_directory(
    config: F4Config,
    client: LeanHTTPClient,
) -> None:
    _migrate(config)
    creds = Credentials.for_service(SECRET, "f4-name")
    # A directory that does not answer: the heartbeat runs and fails, /status still answers.
    beating = replace(config, directory_url=f"http://127.0.0.1:{_free_port()}")
    async with (
        running_name_node(beating, credentials=creds) as (_, server),
    ):
        url = f"http://127.0.0.1:{server.port}/status"
        resp = await client.request("GET", url, headers=_headers(Purpose.ADMIN))
    assert resp.status == 200
    doc = json.loads(resp.body)
    assert doc["heartbeat"]["directory_url"] == beating.directory_url
    assert doc["tickets_issued"] == 0
