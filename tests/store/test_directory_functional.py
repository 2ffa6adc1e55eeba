"""A store node talking to its directory: heartbeats and scrub repair reports, with a real
HTTP peer (tests/store/cluster.StandInDirectory) in the directory's place."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.jobs.local import Throttle
from store.client import StoreClient
from store.config import StoreConfig
from store.node import StoreNode
from store.server import running_node
from store.storage import OsStorage
from store.superblock import SUPERBLOCK_BYTES
from store.volume import Volume, data_name
from store.volume_checking import verify
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume
from tests.conftest import creds
from tests.store.cluster import (
    COOKIE,
    SECRET,
    StandInDirectory,
    eventually,
    node_config,
    unused_port,
    wait_job,
)


@pytest.fixture
async def directory() -> AsyncIterator[StandInDirectory]:
    d = StandInDirectory()
    await d.start()
    yield d
    await d.stop()


def _config(tmp_path: Path, directory: StandInDirectory, **kw: object) -> StoreConfig:
    return node_config(
        tmp_path / "n",
        directory_url=directory.url,
        heartbeat_interval_s=0.05,
        node_id="store-9",
        failure_domain="dc1/rack2/host9",
        **kw,
    )


async def test_heartbeats_carry_the_node_and_its_volumes(
    tmp_path: Path, directory: StandInDirectory
) -> None:
    directory.interval_s = 0.2
    async with running_node(
        _config(tmp_path, directory), credentials=creds(SECRET, "store"), create_volumes=[1]
    ) as (
        n,
        server,
    ):
        beat = await directory.next_beat()
        assert beat["node_id"] == "store-9"
        assert beat["role"] == "store"
        assert beat["url"] == f"http://127.0.0.1:{server.port}"
        assert beat["failure_domain"] == "dc1/rack2/host9"
        assert beat["free_bytes"] > 0
        assert [(v["volume_id"], v["mode"]) for v in beat["volumes"]] == [(1, "writable")]
        assert {"size_bytes", "reason", "needles_live", "compaction_revision"} <= set(
            beat["volumes"][0]
        )
        assert directory.unauthorized == 0
        # The directory's answer sets the interval.
        await directory.next_beat()
        assert n.heartbeat is not None and n.heartbeat.interval_s == 0.2
        # A new volume is announced at once, not one interval later.
        async with StoreClient(f"http://127.0.0.1:{server.port}", credentials=creds(SECRET)) as c:
            t0 = time.monotonic()
            await c.create_volume(2)
            while [v["volume_id"] for v in directory.heartbeats[-1]["volumes"]] != [1, 2]:
                await directory.next_beat()
            assert time.monotonic() - t0 < 0.15
            status = await c.status()
        assert status["heartbeat"]["beats_sent"] >= 3
        assert status["heartbeat"]["directory_reachable"] is True


async def test_advertise_url_is_what_the_directory_is_told(
    tmp_path: Path, directory: StandInDirectory
) -> None:
    config = _config(tmp_path, directory, advertise_url="http://store-9.example:8701")
    async with running_node(config, credentials=creds(SECRET, "store")):
        beat = await directory.next_beat()
        assert beat["url"] == "http://store-9.example:8701"


async def test_a_directory_outage_is_logged_once_and_beats_resume(
    tmp_path: Path, directory: StandInDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pinhole.store")
    async with running_node(_config(tmp_path, directory), credentials=creds(SECRET, "store")) as (
        n,
        _,
    ):
        await directory.next_beat()
        hb = n.heartbeat
        assert hb is not None
        directory.down = True
        failed = hb.beats_failed
        await eventually(lambda: hb.beats_failed >= failed + 5)
        assert not hb.statistics().directory_reachable
        warnings = [r for r in caplog.records if "heartbeat to the directory" in r.message]
        assert len(warnings) == 1 and "503" in warnings[0].message
        directory.down = False
        await directory.next_beat()
        await eventually(lambda: hb.statistics().directory_reachable)
        assert any("answers heartbeats again" in r.message for r in caplog.records)


async def test_a_node_starts_while_its_directory_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pinhole.store")
    directory = StandInDirectory()
    port = unused_port()
    config = node_config(
        tmp_path / "n", directory_url=f"http://127.0.0.1:{port}", heartbeat_interval_s=0.05
    )
    try:  # the directory stops after the node: no beat is cut short by its going away
        async with running_node(config, credentials=creds(SECRET, "store"), create_volumes=[1]) as (
            n,
            server,
        ):
            hb = n.heartbeat
            assert hb is not None
            await eventually(lambda: hb.beats_failed >= 5)
            warnings = [r for r in caplog.records if "heartbeat to the directory" in r.message]
            assert len(warnings) == 1
            async with StoreClient(
                f"http://127.0.0.1:{server.port}", credentials=creds(SECRET)
            ) as c:
                await c.put(1, 1, 0, COOKIE, b"the data path does not need the directory")
            await directory.start(port)
            beat = await directory.next_beat()
            assert [v["volume_id"] for v in beat["volumes"]] == [1]
    finally:
        await directory.stop()


async def test_no_directory_no_heartbeat(tmp_path: Path) -> None:
    async with running_node(node_config(tmp_path / "n"), credentials=creds(SECRET, "store")) as (
        n,
        _,
    ):
        assert n.heartbeat is None
        assert n.statistics().heartbeat is None


# -- scrubber -----------------------------------------------------------------------------------


def _flip_byte(n: StoreNode, vid: int, offset: int) -> None:
    path = os.path.join(n.storage.root, data_name(vid))
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, offset)[0] ^ 0x01]), offset)
    finally:
        os.close(fd)


async def test_scrub_finds_a_flipped_byte_and_reports_it_for_repair(
    tmp_path: Path, directory: StandInDirectory
) -> None:
    async with running_node(
        _config(tmp_path, directory), credentials=creds(SECRET, "store"), create_volumes=[1]
    ) as (
        n,
        server,
    ):
        c = StoreClient(f"http://127.0.0.1:{server.port}", credentials=creds(SECRET))
        async with c:
            offsets = {}
            for key in range(1, 20):
                offsets[key] = (await n.put(1, key, 2, COOKIE, bytes([key]) * 2000)).offset
            await c.delete(1, 3)
            _flip_byte(n, 1, offsets[7] + 100)  # a live needle's data
            _flip_byte(n, 1, offsets[3] + 100)  # a deleted one: garbage, not reported
            job = await c.scrub(1)
            assert job["kind"] == "scrub"
            done = await wait_job(c, 1, "scrub")
            assert done["state"] == "done", done
            result = done["result"]
            assert (result["corrupt_live"], result["corrupt_dead"]) == (1, 1)
            assert result["corrupt_needles"] == [[7, 2]]
            assert result["reports_sent"] == 1
            assert directory.repairs == [
                {"volume_id": 1, "key": 7, "alt_key": 2, "node_id": "store-9", "reason": "scrub"}
            ]
            # What the directory's repair does: a repair PUT of a good copy. The next pass
            # finds the volume sound (the bad copy is garbage now).
            await c.put(1, 7, 2, COOKIE, bytes([7]) * 2000, repair=True)
            await c.scrub(1)
            again = (await wait_job(c, 1, "scrub"))["result"]
            assert (again["ok"], again["corrupt_live"], again["reports_sent"]) == (True, 0, 0)
            scrub = (await c.status())["scrub"]
            assert scrub["passes"] == 2 and scrub["corrupt_found"] == 1
            _, metrics, _ = await c._request("GET", "/metrics")
            assert b'pinhole_store_scrub_reports_sent_total{node="store-9"} 1.0' in metrics
            assert b'pinhole_store_directory_reachable{node="store-9"} 1.0' in metrics
            assert scrub["reports_sent"] == 1 and scrub["bytes_scrubbed"] > 2 * 19 * 2000
            # Per volume: the last pass (sound now), what it read, and when the next is due.
            [v1] = scrub["volumes"]
            assert (v1["volume_id"], v1["passes"], v1["corrupt_found"]) == (1, 2, 0)
            assert v1["bytes_scrubbed"] == again["bytes_checked"]
            assert v1["last_pass_unix_s"] == pytest.approx(time.time(), abs=30)
            assert scrub["interval_s"] == 0 and v1["next_due_unix_s"] is None


async def test_unsent_reports_are_retried(tmp_path: Path, directory: StandInDirectory) -> None:
    async with running_node(
        _config(tmp_path, directory), credentials=creds(SECRET, "store"), create_volumes=[1]
    ) as (
        n,
        server,
    ):
        offset = (await n.put(1, 5, 0, COOKIE, b"z" * 500)).offset
        _flip_byte(n, 1, offset + 40)
        directory.down = True
        async with StoreClient(f"http://127.0.0.1:{server.port}", credentials=creds(SECRET)) as c:
            await c.scrub(1)
            assert (await wait_job(c, 1, "scrub"))["result"]["reports_sent"] == 0
            assert n.scrubber.statistics().reports_pending == 1
            directory.down = False
            await n.scrubber.send_pending()
        assert [r["key"] for r in directory.repairs] == [5]
        assert n.scrubber.statistics().reports_pending == 0


async def test_the_background_scrubber_passes_over_every_volume(
    tmp_path: Path, directory: StandInDirectory
) -> None:
    config = _config(tmp_path, directory, scrub_interval_s=0.2)
    async with running_node(config, credentials=creds(SECRET, "store"), create_volumes=[1, 2]) as (
        n,
        _,
    ):
        offset = (await n.put(2, 9, 0, COOKIE, b"y" * 700)).offset
        _flip_byte(n, 2, offset + 50)
        await asyncio.wait_for(directory.repaired.wait(), 5.0)
        assert directory.repairs[0]["volume_id"] == 2 and directory.repairs[0]["key"] == 9
        await eventually(lambda: n.scrubber.statistics().passes >= 2)
        passes = {v.volume_id: v.passes for v in n.scrubber.statistics().volumes}
    # The schedule, with each volume's last pass, survives restarts.
    assert (tmp_path / "n" / "volumes" / "scrub.json").exists()
    quiet = _config(tmp_path, directory, scrub_interval_s=3600)
    async with running_node(quiet, credentials=creds(SECRET, "store")) as (n, _):
        st = n.scrubber.statistics()
        by_vid = {v.volume_id: v for v in st.volumes}
        assert {vid: v.passes for vid, v in by_vid.items()} == passes
        for v in by_vid.values():
            assert v.last_pass_unix_s is not None and v.first_seen_unix_s is not None
            assert v.next_due_unix_s is not None
            assert v.next_due_unix_s == pytest.approx(v.last_pass_unix_s + 3600, abs=1)
        assert by_vid[2].corrupt_found + by_vid[1].corrupt_found <= 1


async def test_a_version_1_schedule_keeps_its_dates_and_claims_no_pass(
    tmp_path: Path, directory: StandInDirectory
) -> None:
    volumes = tmp_path / "n" / "volumes"
    async with running_node(
        _config(tmp_path, directory), credentials=creds(SECRET, "store"), create_volumes=[1]
    ):
        pass
    # Not due within the test (the loop would scrub an overdue volume at once).
    seen = round(time.time()) - 10.0
    (volumes / "scrub.json").write_text(f'{{"version": 1, "volumes": {{"1": {seen}}}}}')
    config = _config(tmp_path, directory, scrub_interval_s=3600)
    async with running_node(config, credentials=creds(SECRET, "store")) as (n, _):
        [v] = n.scrubber.statistics().volumes
        assert (v.volume_id, v.first_seen_unix_s, v.last_pass_unix_s) == (1, seen, None)
        assert (v.passes, v.next_due_unix_s) == (0, seen + 3600)


def test_a_throttled_verify_holds_its_rate(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path / "v")
    vol: Volume = create_volume(storage, 1, VolumeLimits(size_bytes_max=16 * 1024**2))
    try:
        for key in range(100):
            vol.put(key, 0, 1, bytes(4000)).result()
        # The throttle's clock moves only when it sleeps: the time slept is the scan's time.
        now = [0.0]

        def sleep(s: float) -> None:
            now[0] += s

        throttle = Throttle(1_000_000, clock=lambda: now[0], sleep=sleep)
        report = verify(vol, throttle=throttle)
        assert report.ok and report.bytes_checked > 400_000
        scanned = report.bytes_checked - SUPERBLOCK_BYTES
        assert throttle.bytes == scanned
        assert now[0] == pytest.approx(scanned / 1_000_000)
    finally:
        vol.close()
