"""`pinhole f4 migrate | status | verify | rebuild` end to end, as real subprocesses on real
sealed volumes written by the store code, with the jobs on a real metadata database
(SQLite, and PostgreSQL for the migration path): what migrates, the end-to-end check, the
JSON shapes, the lock's exit 75, losing blocks then rebuilding, a kill -9 mid-migration
then a rerun that ends byte-identical to an uninterrupted migration, one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from f4.config import F4Config, F4Node
from f4.keystore import KeyStore
from f4.local_block_store import LocalBlockStore
from f4.reader import Reader
from tests.directory.conftest import PG_URL, pg_schema
from tests.f4.helpers import Blobs, random_blobs, sealed_volume
from tests.ops.test_cli import Result, _env, assert_no_progress_bar, one_error_line, pinhole

BLOCK = 16 * 1024
RACKS = 5  # 15 nodes, 3 per rack
KILL_WAIT_S_MAX = 60.0


@dataclass
class Site:
    """A working directory with a pinhole.toml naming a cell, a Haystack volume directory
    and a metadata database."""

    root: Path
    db_args: list[str]
    media: dict[str, str] = field(default_factory=dict)
    f4: dict[str, Any] = field(default_factory=dict)

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def cell(self) -> Path:
        return self.root / "cell"

    def write_config(self, **f4: Any) -> None:
        self.f4.update(f4)
        lines = ["[f4]"]
        for k, v in self.f4.items():
            lines.append(f"{k} = {json.dumps(v)}")
        if "nodes" not in self.f4:
            lines.append("nodes = [")
            for i in range(15):
                lines.append(f'  {{ name = "n{i:02d}", rack = "r{i % RACKS}" }},')
            lines.append("]")
        if self.media:
            lines.append("[media]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in self.media.items()]
        (self.root / "pinhole.toml").write_text("\n".join(lines) + "\n")

    def run(self, *args: object, db: bool = False) -> Result:
        return pinhole(*args, *(self.db_args if db else []), cwd=self.root)

    def config(self) -> F4Config:
        nodes = tuple(F4Node(f"n{i:02d}", f"r{i % RACKS}") for i in range(15))
        return F4Config(cell_root=self.cell, nodes=nodes, block_bytes=BLOCK)


def _site(root: Path, db_args: list[str], media: dict[str, str] | None = None) -> Site:
    site = Site(root, db_args, media or {})
    site.volumes.mkdir()
    (root / "media").mkdir()
    site.write_config(
        cell_root=str(site.cell),
        haystack_dir=str(site.volumes),
        block_bytes=BLOCK,
        age_s_min=0,
        rebuild_mb_s=0,
    )
    return site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return _site(tmp_path, ["--media-data", str(tmp_path / "media")])


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "sqlite":
        yield _site(tmp_path, ["--media-data", str(tmp_path / "media")])
        return
    with contextlib.ExitStack() as stack:
        schema = _enter_async(stack, pg_schema())
        yield _site(tmp_path, ["--database-url", PG_URL], {"database_schema": schema})


def _enter_async(stack: contextlib.ExitStack, acm: Any) -> Any:
    loop = asyncio.new_event_loop()
    value = loop.run_until_complete(acm.__aenter__())
    stack.callback(lambda: (loop.run_until_complete(acm.__aexit__(None, None, None)), loop.close()))
    return value


def _read_all(site: Site, volume: int, blobs: Blobs, keys_path: Path | None = None) -> None:
    """Every blob read through f4's Reader equals what was written to Haystack."""
    config = site.config()
    store = LocalBlockStore(config.blocks_dir, [n.name for n in config.nodes])
    keys = KeyStore(keys_path or config.keys_path)
    try:
        reader = Reader(store, keys)
        for (key, alt), (cookie, data) in blobs.items():
            assert reader.read(volume, key, alt, cookie) == data
    finally:
        keys.close()


# -- migrate, status, verify -----------------------------------------------------------------


def test_migrate_then_status_and_verify(any_db_site: Site) -> None:
    site = any_db_site
    rng = random.Random(1)
    one, two = random_blobs(rng, 120, 6000), random_blobs(rng, 40)
    deleted = {(5000 + i, 1): (i, b"deleted") for i in range(5)}
    sealed_volume(site.volumes, 1, one, deleted=deleted)
    sealed_volume(site.volumes, 2, two)

    dry = site.run("f4", "migrate", "--dry-run", "--json")
    assert dry.code == 0, dry
    doc = dry.json()
    assert doc["dry_run"] is True
    assert [(v["volume"], v["outcome"], v["blobs"]) for v in doc["volumes"]] == [
        (1, "would migrate", 120),
        (2, "would migrate", 40),
    ]
    assert doc["volumes"][0]["plaintext_bytes"] == sum(len(d) for _, d in one.values())
    assert not site.cell.joinpath("blocks").exists() or not list(site.cell.glob("blocks/*/*"))

    r = site.run("f4", "migrate", "--json", db=True)
    assert r.code == 0, r
    migrated = {v["volume"]: v for v in r.json()["volumes"]}
    assert {v: m["outcome"] for v, m in migrated.items()} == {1: "migrated", 2: "migrated"}
    assert migrated[1]["blobs"] == migrated[1]["blobs_checked"] == 120
    assert migrated[1]["damaged_needles"] == 0
    _read_all(site, 1, one)
    _read_all(site, 2, two)

    again = site.run("f4", "migrate", "--json", db=True)
    assert again.code == 0, again
    assert [(v["outcome"], v["reason"]) for v in again.json()["volumes"]] == [
        ("skipped", "already migrated"),
        ("skipped", "already migrated"),
    ]

    status = site.run("f4", "status", "--json")
    assert status.code == 0, status
    sdoc = status.json()
    assert sdoc["cell"] == {
        "nodes": 15,
        "racks": RACKS,
        "nodes_up": 15,
        "note": "15 nodes in 5 racks: fewer than the 14 failure domains a stripe needs to "
        "survive any 4 losses",
    }
    for v in sdoc["volumes"]:
        assert v["state"] == "migrated"
        assert v["index_copies_ok"] == v["index_copies_expected"] == 3
        assert v["stripes"]
        for s in v["stripes"]:
            # 14 blocks on 14 of the 15 nodes: any 4 nodes; racks hold 2 or 3 blocks each,
            # so losing one rack (3) leaves 11, a second (worst 3 more) leaves 8.
            assert (s["blocks_present"], s["blocks_healthy"]) == (14, 14)
            assert s["node_losses_survived"] == 4
            assert s["rack_losses_survived"] == 1

    verify = site.run("f4", "verify", "--json")
    assert verify.code == 0, verify
    vdoc = verify.json()
    assert vdoc["ok"] is True
    assert [(v["volume"], v["ok"], v["damage"]) for v in vdoc["volumes"]] == [
        (1, True, []),
        (2, True, []),
    ]

    jobs = site.run("jobs", "list", "--queue", "f4", "--json", db=True)
    assert jobs.code == 0, jobs
    jdoc = jobs.json()
    assert jdoc["counts"]["f4"]["done"] == 2
    assert sorted((j["kind"], j["subject_id"]) for j in jdoc["jobs"]) == [
        ("migrate", "1"),
        ("migrate", "2"),
    ]


def test_what_is_due(site: Site) -> None:
    """Only sealed volumes whose newest needle is old enough; --volume on another one is a
    one-line error."""
    rng = random.Random(2)
    sealed_volume(site.volumes, 1, random_blobs(rng, 10))
    sealed_volume(site.volumes, 2, random_blobs(rng, 10))
    old = time.time() - 7200
    os.utime(site.volumes / "v1.dat", (old, old))
    site.write_config(age_s_min=3600)

    r = site.run("f4", "migrate", "--dry-run", "--json")
    assert r.code == 0, r
    rows = {v["volume"]: v for v in r.json()["volumes"]}
    assert rows[1]["outcome"] == "would migrate"
    assert rows[2]["outcome"] == "skipped"
    assert "younger than age_s_min" in rows[2]["reason"]

    young = site.run("f4", "migrate", "--volume", 2, db=True)
    assert young.code == 1
    assert "volume 2 is not due: newest needle" in one_error_line(young)
    assert not list(site.cell.glob("blocks/*/v2.*"))


def test_an_unsealed_volume_is_not_migrated(site: Site, tmp_path: Path) -> None:
    from store.storage import OsStorage
    from store.volume_loading import create_volume
    from tests.f4.helpers import LIMITS

    vol = create_volume(OsStorage(site.volumes), 3, LIMITS)
    vol.put(1, 1, 7, b"still writable").result()
    vol.close()
    r = site.run("f4", "migrate", "--json", db=True)
    assert r.code == 0, r
    assert r.json()["volumes"] == [
        {"volume": 3, "outcome": "skipped", "reason": "takes writes (not sealed)"}
    ]
    one = site.run("f4", "migrate", "--volume", 3, db=True)
    assert one.code == 1
    assert one_error_line(one) == "pinhole: volume 3 is not due: takes writes (not sealed)"


# -- losing blocks, rebuild ------------------------------------------------------------------


def test_lose_four_blocks_verify_fails_rebuild_restores(site: Site) -> None:
    rng = random.Random(3)
    blobs = random_blobs(rng, 150, 4000)
    sealed_volume(site.volumes, 1, blobs)
    assert site.run("f4", "migrate", db=True).code == 0
    blocks = site.cell / "blocks"
    # Stripe 0: two data blocks and one parity block deleted, one data block corrupted.
    for b in (0, 4, 12):
        (path,) = blocks.glob(f"*/v1.s0.b{b}.blk")
        path.unlink()
    (corrupt,) = blocks.glob("*/v1.s0.b7.blk")
    raw = bytearray(corrupt.read_bytes())
    raw[10] ^= 0xFF
    corrupt.write_bytes(bytes(raw))

    bad = site.run("f4", "verify", "--json")
    assert bad.code == 1, bad
    (vol,) = bad.json()["volumes"]
    assert vol["ok"] is False
    assert sorted((d["stripe"], d["block"]) for d in vol["damage"]) == [
        (0, 0), (0, 4), (0, 7), (0, 12),
    ]  # fmt: skip
    assert vol["stripes_lost"] == []
    status = site.run("f4", "status", "--json").json()
    s0 = status["volumes"][0]["stripes"][0]
    assert (s0["blocks_present"], s0["blocks_healthy"], s0["node_losses_survived"]) == (11, 10, 0)
    _read_all(site, 1, blobs)  # degraded reads serve everything meanwhile

    r = site.run("f4", "rebuild", "--json", db=True)
    assert r.code == 0, r
    doc = r.json()
    (done,) = doc["volumes"]
    assert done["outcome"] == "done"
    assert done["blocks_rebuilt"] == 4
    assert doc["throttle_mb_s"] == 0

    good = site.run("f4", "verify")
    assert good.code == 0, good
    assert "volume 1: ok, " in good.out
    _read_all(site, 1, blobs)
    again = site.run("f4", "rebuild", "--json", db=True)
    assert again.json()["volumes"] == [{"volume": 1, "outcome": "healthy"}]
    kinds = [
        j["kind"]
        for j in site.run("jobs", "list", "--queue", "f4", "--json", db=True).json()["jobs"]
    ]
    assert sorted(kinds) == ["migrate", "rebuild"]


def test_five_lost_blocks_is_data_lost_and_rebuild_fails(site: Site) -> None:
    sealed_volume(site.volumes, 1, random_blobs(random.Random(4), 30))
    assert site.run("f4", "migrate", db=True).code == 0
    for b in range(5):
        (path,) = (site.cell / "blocks").glob(f"*/v1.s0.b{b}.blk")
        path.unlink()
    v = site.run("f4", "verify", "--json")
    assert v.code == 1
    assert v.json()["volumes"][0]["stripes_lost"] == [0]
    r = site.run("f4", "rebuild", "--json", db=True)
    assert r.code == 1, r
    (failed,) = r.json()["volumes"]
    assert failed["outcome"] == "failed"
    assert "StripeUnrecoverable" in failed["error"]


# -- the lock --------------------------------------------------------------------------------


def test_lock_held_exits_75(site: Site) -> None:
    sealed_volume(site.volumes, 1, random_blobs(random.Random(5), 10))
    site.cell.mkdir()
    fd = os.open(site.cell / "f4.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for command in ("migrate", "rebuild"):
            r = site.run("f4", command, db=True)
            assert r.code == 75, r
            assert "another f4 migrate or rebuild holds" in one_error_line(r)
        # What only reads runs under the lock; a dry run too.
        assert site.run("f4", "migrate", "--dry-run").code == 0
        assert site.run("f4", "status").code == 0
    finally:
        os.close(fd)
    assert not list(site.cell.glob("blocks/*/*.blk"))
    assert site.run("f4", "migrate", db=True).code == 0


# -- kill -9 ---------------------------------------------------------------------------------


def _start_migrate(site: Site) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "f4", "migrate", *site.db_args],
        cwd=site.root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_mid_migration_then_rerun_is_byte_exact(any_db_site: Site, tmp_path: Path) -> None:
    site = any_db_site
    blobs = random_blobs(random.Random(6), 1500, 12000)  # ~9 MB, ~60 stripes
    sealed_volume(site.volumes, 1, blobs)
    journal = site.cell / "work" / "v1.f4journal"
    proc = _start_migrate(site)
    deadline = time.monotonic() + KILL_WAIT_S_MAX
    try:
        while time.monotonic() < deadline:
            if journal.exists() and json.loads(journal.read_bytes())["stripes_done"] >= 2:
                break
            assert proc.poll() is None, "the migration ended before it could be killed"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    state = json.loads(journal.read_bytes())
    assert not state["done"], "killed too late to test a resume"
    assert not (site.cell / "work" / "v1.verified").exists()
    running = site.run("jobs", "list", "--queue", "f4", "--json", db=True).json()
    assert running["counts"]["f4"]["running"] == 1

    r = site.run("f4", "migrate", "--json", db=True)
    assert r.code == 0, r
    (done,) = r.json()["volumes"]
    assert done["outcome"] == "migrated"
    assert done["stripes_resumed"] >= 2
    assert done["attempts"] == 1  # the kill was not counted as a failed attempt
    _read_all(site, 1, blobs)

    # An uninterrupted migration with the same keys writes the same bytes.
    (tmp_path / "reference").mkdir()
    reference = _site(
        tmp_path / "reference", ["--media-data", str(tmp_path / "reference" / "media")]
    )
    shutil.copytree(site.volumes, reference.volumes, dirs_exist_ok=True)
    reference.cell.mkdir()
    _copy_keys(site.config().keys_path, reference.config().keys_path)
    assert reference.run("f4", "migrate", db=True).code == 0
    ours = sorted(p.relative_to(site.cell) for p in site.cell.glob("blocks/*/*"))
    theirs = sorted(p.relative_to(reference.cell) for p in reference.cell.glob("blocks/*/*"))
    assert ours == theirs
    for rel in ours:
        assert (site.cell / rel).read_bytes() == (reference.cell / rel).read_bytes(), rel


def _copy_keys(source: Path, target: Path) -> None:
    """A consistent copy of the key store (SQLite's backup API)."""
    import sqlite3

    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ({"code": "rs_magic"}, ("status",), "pinhole: f4: code must be one of isa_l_rs_cauchy"),
        ({"block_bytes": 1000}, ("status",), "pinhole: f4: block_bytes must be a multiple of 4096"),
        ({"bogus": 1}, ("status",), "pinhole: unknown key f4.bogus"),
        ({}, ("migrate", "--volume", "9"), "pinhole: no Haystack volume 9 in "),
        ({}, ("status", "--volume", "4"), "pinhole: volume 4 is not in the f4 cell at "),
        ({}, ("verify", "--volume", "4"), "pinhole: volume 4 is not in the f4 cell at "),
        ({"haystack_dir": "/no/volumes"}, ("migrate",), "pinhole: no Haystack volume directory"),
        ({"nodes": []}, ("status",), "pinhole: f4: nodes must name at least one node"),
    ],
)  # fmt: skip
def test_bad_input_one_line(
    site: Site, config: dict[str, Any], args: tuple[str, ...], message: str
) -> None:
    site.write_config(**config)
    r = site.run("f4", *args)
    assert r.code in (1, 2), r
    assert one_error_line(r).startswith(message), r


def test_missing_metadata_directory_is_one_line(site: Site) -> None:
    sealed_volume(site.volumes, 1, random_blobs(random.Random(7), 5))
    r = site.run("f4", "migrate", "--media-data", site.root / "nowhere")
    assert r.code == 1
    assert one_error_line(r).startswith("pinhole: no metadata directory ")


# -- progress --------------------------------------------------------------------------------


def test_progress_bar_on_a_terminal_only(site: Site) -> None:
    import pty
    import struct
    import termios

    sealed_volume(site.volumes, 1, random_blobs(random.Random(8), 60))
    sealed_volume(site.volumes, 2, random_blobs(random.Random(9), 60))
    piped = site.run("f4", "migrate", "--volume", 1, db=True)
    assert piped.code == 0, piped
    assert_no_progress_bar(piped)

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ops.cli", "f4", "migrate", "--volume", "2", *site.db_args],
            cwd=site.root,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        drawn = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 65536):
                drawn += chunk
    finally:
        os.close(controller)
    assert proc.returncode == 0
    assert b"migrate v2" in drawn and b"1000/1000" in drawn, drawn[-500:]
    assert b"migrated" in proc.stdout


# -- failures as jobs ------------------------------------------------------------------------


def test_a_failed_migration_is_dead_lettered_then_retried(site: Site) -> None:
    """A journal written for other contents makes the migration fail: the job is dead after
    its one attempt, `pinhole jobs` shows and retries it, and the next run migrates."""
    blobs = random_blobs(random.Random(10), 30)
    sealed_volume(site.volumes, 1, blobs)
    site.write_config(attempts_max=1)
    (site.cell / "work").mkdir(parents=True)
    journal = site.cell / "work" / "v1.f4journal"
    journal.write_text(json.dumps({"version": 1, "volume": 1, "plan": "other", "done": False,
                                   "stripes_done": 0}))  # fmt: skip

    r = site.run("f4", "migrate", "--json", db=True)
    assert r.code == 1, r
    (dead,) = r.json()["volumes"]
    assert dead["outcome"] == "dead"
    assert "MigrationMismatch" in dead["error"]
    listed = site.run("jobs", "dead", "--queue", "f4", "--json", db=True).json()
    assert [(j["kind"], j["subject_id"]) for j in listed["jobs"]] == [("migrate", "1")]
    again = site.run("f4", "migrate", "--json", db=True)
    assert again.code == 1 and again.json()["volumes"][0]["outcome"] == "dead"

    journal.unlink()
    assert site.run("jobs", "retry", "--queue", "f4", "--all-dead", db=True).code == 0
    done = site.run("f4", "migrate", "--json", db=True)
    assert done.code == 0, done
    assert done.json()["volumes"][0]["outcome"] == "migrated"
    _read_all(site, 1, blobs)


def test_a_volume_whose_f4_copy_was_lost_migrates_again(site: Site) -> None:
    blobs = random_blobs(random.Random(11), 30)
    sealed_volume(site.volumes, 1, blobs)
    assert site.run("f4", "migrate", db=True).code == 0
    shutil.rmtree(site.cell)
    r = site.run("f4", "migrate", "--json", db=True)
    assert r.code == 0, r
    assert r.json()["volumes"][0]["outcome"] == "migrated"
    _read_all(site, 1, blobs)
    jobs = site.run("jobs", "list", "--queue", "f4", "--json", db=True).json()
    assert jobs["counts"]["f4"]["done"] == 2


def test_rebuild_goes_on_past_a_volume_without_an_index(site: Site) -> None:
    one = random_blobs(random.Random(12), 30)
    sealed_volume(site.volumes, 1, one)
    sealed_volume(site.volumes, 2, random_blobs(random.Random(13), 30))
    assert site.run("f4", "migrate", db=True).code == 0
    for path in (site.cell / "blocks").glob("*/v2.f4idx"):
        path.unlink()
    (lost,) = (site.cell / "blocks").glob("*/v1.s0.b2.blk")
    lost.unlink()
    r = site.run("f4", "rebuild", "--json", db=True)
    assert r.code == 1, r
    rows = {v["volume"]: v for v in r.json()["volumes"]}
    assert rows[1]["outcome"] == "done" and rows[1]["blocks_rebuilt"] == 1
    assert rows[2]["outcome"] == "failed"
    assert "no readable index copy of volume 2" in rows[2]["error"]
    _read_all(site, 1, one)
    v = site.run("f4", "verify", "--json")
    assert v.code == 1
    assert [(x["volume"], x["ok"]) for x in v.json()["volumes"]] == [(1, True), (2, False)]
