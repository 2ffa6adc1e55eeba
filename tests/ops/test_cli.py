"""The `pinhole` command through real processes: every test runs `python -m ops.cli ...` as a
subprocess (pipes, so never a terminal) against a real store node process on loopback, and
checks exit codes, the one-line errors, JSON fields and the bytes the node serves."""

from __future__ import annotations

import asyncio
import fcntl
import http.server
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from common import credentials
from store.client import StoreClient, StoreClientError
from tests.conftest import creds

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
COOKIE = 0x5EED_0F_C0FFEE_0042
CLI_TIMEOUT_S = 60.0
NODE_START_S_MAX = 30.0
VOLUME_SIZE_MAX = 64 * 1024 * 1024
NO_SECRET = (
    "pinhole: no cluster secret: set PINHOLE_CLUSTER_SECRET, pass a secret file or "
    ".pinhole/cluster.secret"
)
# What tqdm would leave on a stream if a progress bar were drawn.
PROGRESS_MARKS = ("\r", "‰", "it/s", "compact v", "verify v", "%|")


# -- running the command -------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without any pinhole setting, the repository importable."""
    env = {k: v for k, v in os.environ.items() if k not in (credentials.SECRET_ENV, "PINHOLE_NODE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def pinhole(
    *args: object, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = CLI_TIMEOUT_S
) -> Result:
    p = subprocess.run(
        [sys.executable, "-m", "ops.cli", *(str(a) for a in args)],
        cwd=cwd,
        env=env if env is not None else _env(),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    return Result(p.returncode, p.stdout.decode(), p.stderr.decode())


def one_error_line(r: Result) -> str:
    """The single `pinhole: ...` line a failing command prints on stderr."""
    lines = r.err.splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("pinhole: "), r
    return lines[0]


def assert_no_progress_bar(r: Result) -> None:
    for mark in PROGRESS_MARKS:
        assert mark not in r.out and mark not in r.err, (mark, r)


def _lock_for(args: tuple[object, ...], tmp_path: Path) -> list[object]:
    """A lock file of the test's own for `compact` (never the shared default one)."""
    return ["--lock", tmp_path / "compact.lock"] if args[0] == "compact" else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound by no listener: connecting is refused, and nobody else can take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


# -- a store node process -----------------------------------------------------------------------


class Node:
    """`pinhole store serve` in its own process, on a port the OS picks."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data = root / "data"
        self.secret_file = credentials.ensure_secret_file(root / "secret")
        self.secret = self.secret_file.read_bytes().strip()
        self.work = root / "work"  # the commands' cwd: no pinhole.toml, no .pinhole/
        self.work.mkdir(exist_ok=True)
        self.log = root / "node.log"
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "ops.cli", "store", "serve",
            "--data", str(self.data),
            "--port", "0",
            "--secret-file", str(self.secret_file),
            "--volume-size-max", "64MiB",
            "--create-volume", "1",
            "--log-level", "warning",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.work, env=_env())
        deadline = time.monotonic() + NODE_START_S_MAX
        while time.monotonic() < deadline:
            m = re.search(r"listening on (http://\S+)", self.log.read_text())
            if m:
                self.url = m[1]
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the node did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    @property
    def dat_file(self) -> Path:
        return self.data / "volumes" / "v1.dat"

    def volume_cmd(self, *args: object, secret: bool = True) -> Result:
        """`pinhole volume ...` aimed at this node (with its secret file unless told)."""
        extra: list[object] = ["--node", self.url]
        if secret:
            extra += ["--secret-file", self.secret_file]
        return pinhole("volume", *args, *extra, cwd=self.work)

    def volumes(self) -> dict[int, dict[str, Any]]:
        """`pinhole volume list --json`, by volume id."""
        r = self.volume_cmd("list", "--json")
        assert r.code == 0 and r.err == "", r
        return {v["volume_id"]: v for v in r.json()["volumes"]}

    def client(self, fn: Callable[[StoreClient], Awaitable[T]]) -> T:
        async def go() -> T:
            async with StoreClient(self.url, credentials=creds(self.secret)) as c:
                return await fn(c)

        return asyncio.run(go())

    def create(self, vid: int) -> None:
        r = self.volume_cmd("create", "--volume", vid)
        assert r.code == 0, r


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the module; each test uses volumes of its own."""
    n = Node(tmp_path_factory.mktemp("node"))
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def fresh_node(tmp_path: Path) -> Iterator[Node]:
    """A node of the test's own (for commands that act on every volume of a node)."""
    n = Node(tmp_path / "fresh")
    n.start()
    try:
        yield n
    finally:
        n.stop()


def blobs(seed: int, first_key: int, count: int, size: int) -> dict[int, bytes]:
    rnd = random.Random(seed)
    return {first_key + i: rnd.randbytes(size) for i in range(count)}


async def put_all(c: StoreClient, vid: int, items: dict[int, bytes]) -> None:
    for key, data in items.items():
        await c.put(vid, key, 0, COOKIE, data)


async def delete_all(c: StoreClient, vid: int, keys: list[int]) -> None:
    for key in keys:
        assert await c.delete(vid, key) == 1


async def read_all(c: StoreClient, vid: int, keys: list[int]) -> dict[int, bytes | int]:
    """The bytes of each needle, or the HTTP status of the error."""
    got: dict[int, bytes | int] = {}
    for key in keys:
        try:
            got[key] = (await c.get(vid, key, 0, COOKIE)).data
        except StoreClientError as e:
            got[key] = e.status
    return got


async def put_status(c: StoreClient, vid: int, key: int, data: bytes) -> tuple[int, str]:
    try:
        await c.put(vid, key, 0, COOKIE, data)
    except StoreClientError as e:
        return e.status, e.code
    return 201, ""


def _job_head(job: dict[str, Any]) -> tuple[object, ...]:
    return job["volume_id"], job["kind"], job["state"], job["error"]


# -- volume list / create ------------------------------------------------------------------------


def test_list_prints_a_table_and_json(node: Node) -> None:
    r = node.volume_cmd("create", "--volume", 5, "--json")
    assert r.code == 0 and r.err == "", r
    created = r.json()
    assert created["volume_id"] == 5
    assert created["mode"] == "writable"
    assert created["size_bytes_max"] == VOLUME_SIZE_MAX

    r = node.volume_cmd("list")
    assert r.code == 0 and r.err == "", r
    lines = r.out.splitlines()
    assert lines[0].split() == [
        "volume", "state", "size", "full", "needles", "garbage", "revision"
    ]  # fmt: skip
    rows = {row[0]: row for row in (re.split(r"\s{2,}", line) for line in lines[1:])}
    assert rows["5"] == ["5", "writable", "64 B", "0.0%", "0", "0.0%", "0"]

    vols = node.volumes()
    assert sorted(rows) == sorted(str(v) for v in vols)
    v5 = vols[5]
    assert v5["mode"] == "writable"
    assert v5["reason"] is None
    assert v5["size_bytes"] == 64  # the superblock
    assert v5["size_bytes_max"] == VOLUME_SIZE_MAX
    assert v5["needles_live"] == 0
    assert v5["garbage_ratio"] == 0.0
    assert v5["compaction_revision"] == 0
    assert v5["compacting"] is False


def test_create_then_list_shows_it_and_a_second_create_fails(node: Node) -> None:
    assert 2 not in node.volumes()
    r = node.volume_cmd("create", "--volume", 2)
    assert r == Result(0, f"volume 2 created on {node.url}\n", "")
    v2 = node.volumes()[2]
    assert (v2["mode"], v2["needles_live"], v2["size_bytes"]) == ("writable", 0, 64)

    again = node.volume_cmd("create", "--volume", 2)
    assert again.code == 1
    assert again.out == ""
    assert one_error_line(again) == "pinhole: volume 2 exists (HTTP 409, volume_exists)"


@pytest.mark.parametrize(
    "args",
    [("verify", "--volume", 99), ("compact", "--volume", 99)],
    ids=["verify", "compact"],
)
def test_a_volume_the_node_lacks_exits_1(
    node: Node, tmp_path: Path, args: tuple[object, ...]
) -> None:
    r = node.volume_cmd(*args, *_lock_for(args, tmp_path))
    assert r.code == 1, r
    assert one_error_line(r) == f"pinhole: volume 99 is not on {node.url}"


# -- readonly / writable / seal ------------------------------------------------------------------


def test_readonly_writable_and_seal_change_the_state(node: Node) -> None:
    node.create(3)
    assert node.client(lambda c: put_status(c, 3, 1, b"first")) == (201, "")

    r = node.volume_cmd("readonly", "--volume", 3)
    assert r == Result(0, "volume 3 is read_only\n", "")
    v3 = node.volumes()[3]
    assert (v3["mode"], v3["reason"]) == ("read_only", "operator")
    assert node.client(lambda c: put_status(c, 3, 2, b"refused")) == (409, "volume_not_writable")
    assert node.client(lambda c: read_all(c, 3, [1, 2])) == {1: b"first", 2: 404}

    r = node.volume_cmd("writable", "--volume", 3, "--json")
    assert r.code == 0 and r.err == "", r
    assert (r.json()["volume_id"], r.json()["mode"], r.json()["reason"]) == (3, "writable", None)
    assert node.volumes()[3]["mode"] == "writable"
    assert node.client(lambda c: put_status(c, 3, 2, b"second")) == (201, "")

    r = node.volume_cmd("seal", "--volume", 3)
    assert r == Result(0, "volume 3 is sealed\n", "")
    assert node.volumes()[3]["mode"] == "sealed"
    assert node.client(lambda c: put_status(c, 3, 3, b"refused")) == (409, "volume_not_writable")

    r = node.volume_cmd("writable", "--volume", 3)
    assert r.code == 1 and r.out == "", r
    assert one_error_line(r) == "pinhole: a sealed volume stays sealed (HTTP 400, bad_request)"
    assert node.volumes()[3]["mode"] == "sealed"
    assert node.client(lambda c: read_all(c, 3, [1, 2, 3])) == {1: b"first", 2: b"second", 3: 404}


# -- verify ---------------------------------------------------------------------------------------


def test_verify_counts_live_needles_and_finds_a_flipped_byte(node: Node, tmp_path: Path) -> None:
    items = blobs(seed=1, first_key=1000, count=12, size=3000)
    deleted = [1000, 1004, 1008]
    node.client(lambda c: put_all(c, 1, items))
    node.client(lambda c: delete_all(c, 1, deleted))
    live = len(items) - len(deleted)

    r = node.volume_cmd("verify", "--volume", 1, "--json")
    assert r.code == 0 and r.err == "", r
    doc = r.json()
    assert doc["ok"] is True
    [job] = doc["volumes"]
    assert _job_head(job) == (1, "verify", "done", None)
    res = job["result"]
    assert res["ok"] is True
    assert res["live_checked"] == live
    assert res["needles"] == len(items) + len(deleted)  # the tombstones are needles too
    assert res["tombstones"] == len(deleted)
    assert res["flagged_deleted"] == len(deleted)
    assert (res["corrupt_live"], res["corrupt_dead"], res["map_mismatches"]) == (0, 0, 0)
    assert res["problems"] == []

    # Flip one byte in the middle of a live needle's data, behind the node's back.
    victim = 1005
    raw = node.dat_file.read_bytes()
    data_at = raw.find(items[victim])
    assert data_at > 0 and raw.find(items[victim], data_at + 1) == -1
    needle_at = data_at - 32  # the needle's header comes first
    assert raw[needle_at : needle_at + 4] == b"NEDL"
    at = data_at + len(items[victim]) // 2
    with open(node.dat_file, "r+b") as f:
        f.seek(at)
        f.write(bytes([raw[at] ^ 0xFF]))

    r = node.volume_cmd("verify", "--volume", 1, "--json")
    assert r.code == 1 and r.err == "", r
    doc = r.json()
    assert doc["ok"] is False
    [job] = doc["volumes"]
    assert _job_head(job) == (1, "verify", "done", None)
    res = job["result"]
    assert res["ok"] is False
    assert res["corrupt_live"] == 1
    assert (res["corrupt_dead"], res["map_mismatches"], res["broken_at"]) == (0, 0, None)
    # The damaged needle is counted apart; everything else still checks out.
    assert res["live_checked"] == live - 1
    assert res["needles"] == len(items) + len(deleted) - 1
    assert len(res["problems"]) == 1
    assert res["problems"][0].startswith(f"offset {needle_at}: "), res["problems"]

    r = node.volume_cmd("verify", "--volume", 1)
    assert r.code == 1 and r.err == "", r
    assert r.out == (
        f"volume 1: DAMAGED: {len(items) + len(deleted) - 1} needles, {live - 1} live checked, "
        "1 corrupt live, 0 corrupt dead, 0 index mismatches\n"
        f"  {res['problems'][0]}\n"
    ), r
    assert_no_progress_bar(r)

    got = node.client(lambda c: read_all(c, 1, [victim, 1001]))
    assert got == {victim: 500, 1001: items[1001]}

    # A compaction refuses to carry the damage over: it fails, exit 1, the volume unharmed.
    lock = _lock_for(("compact",), tmp_path)
    r = node.volume_cmd("compact", "--volume", 1, *lock, "--json")
    assert r.code == 1 and r.err == "", r
    doc = r.json()
    assert (doc["ok"], doc["checked"]) == (False, 1)
    [job] = doc["compacted"]
    assert _job_head(job) == (1, "compact", "failed", "CorruptNeedle: needle checksum mismatch")
    assert job["result"] is None
    r = node.volume_cmd("compact", "--volume", 1, *lock)
    assert r == Result(
        1, "volume 1: compaction failed: CorruptNeedle: needle checksum mismatch\n", ""
    )
    v1 = node.volumes()[1]
    assert (v1["compaction_revision"], v1["compacting"], v1["mode"]) == (0, False, "writable")
    got = node.client(lambda c: read_all(c, 1, list(items)))
    assert got == {k: 404 if k in deleted else 500 if k == victim else items[k] for k in items}


# -- compact ---------------------------------------------------------------------------------------


def test_compact_volume_forces_it_and_keeps_every_needle(node: Node, tmp_path: Path) -> None:
    lock = tmp_path / "compact.lock"
    node.create(4)
    items = blobs(seed=4, first_key=4000, count=20, size=4000)
    gone = list(items)[::2]
    kept = list(items)[1::2]
    node.client(lambda c: put_all(c, 4, items))
    node.client(lambda c: delete_all(c, 4, gone))
    before = node.volumes()[4]
    assert before["garbage_ratio"] > 0.5

    r = node.volume_cmd("compact", "--volume", 4, "--lock", lock)
    assert r.code == 0 and r.err == "", r
    assert re.fullmatch(
        r"volume 4: \d+\.\d KiB -> \d+\.\d KiB \(\d+\.\d KiB reclaimed\) in \d+\.\d s\n", r.out
    ), r
    assert_no_progress_bar(r)
    after = node.volumes()[4]
    assert after["compaction_revision"] == before["compaction_revision"] + 1
    assert after["size_bytes"] < before["size_bytes"]
    assert after["needles_live"] == len(kept)
    assert after["garbage_ratio"] == 0.0
    got = node.client(lambda c: read_all(c, 4, list(items)))
    assert got == {k: items[k] if k in kept else 404 for k in items}

    # --volume compacts whatever the garbage (none left) and --threshold says.
    r = node.volume_cmd("compact", "--volume", 4, "--threshold", 0.99, "--lock", lock, "--json")
    assert r.code == 0 and r.err == "", r
    doc = r.json()
    assert (doc["ok"], doc["checked"]) == (True, 1)
    [job] = doc["compacted"]
    assert (job["volume_id"], job["state"]) == (4, "done")
    assert job["result"]["size_before"] == job["result"]["size_after"] == after["size_bytes"]
    assert job["result"]["needles_copied"] == len(kept)
    assert node.volumes()[4]["compaction_revision"] == after["compaction_revision"] + 1
    assert node.client(lambda c: read_all(c, 4, kept)) == {k: items[k] for k in kept}

    r = node.volume_cmd("verify", "--volume", 4)
    assert r.code == 0 and r.err == "", r
    assert r.out == (
        f"volume 4: ok: {len(kept)} needles, {len(kept)} live checked, 0 corrupt live, "
        "0 corrupt dead, 0 index mismatches\n"
    )
    assert_no_progress_bar(r)


def test_compact_all_goes_by_the_threshold(fresh_node: Node, tmp_path: Path) -> None:
    n = fresh_node
    lock = tmp_path / "compact.lock"
    n.create(2)
    v1 = blobs(seed=11, first_key=1, count=30, size=3000)
    v2 = blobs(seed=12, first_key=1, count=10, size=3000)
    n.client(lambda c: put_all(c, 1, v1))
    n.client(lambda c: put_all(c, 2, v2))
    n.client(lambda c: delete_all(c, 2, [1]))
    assert 0 < n.volumes()[2]["garbage_ratio"] < 0.3

    # Both volumes are below the threshold: nothing to do.
    r = n.volume_cmd("compact", "--all", "--threshold", 0.3, "--lock", lock, "--json")
    assert r.code == 0 and r.err == "", r
    assert r.json() == {"ok": True, "checked": 2, "compacted": []}
    r = n.volume_cmd("compact", "--all", "--lock", lock)
    assert r == Result(0, "nothing to compact (2 volumes below 30% garbage)\n", "")
    assert {vid: v["compaction_revision"] for vid, v in n.volumes().items()} == {1: 0, 2: 0}

    # Delete most of volume 1: it alone passes the threshold.
    gone = list(v1)[:24]
    n.client(lambda c: delete_all(c, 1, gone))
    before = n.volumes()
    assert before[1]["garbage_ratio"] > 0.3 > before[2]["garbage_ratio"]

    r = n.volume_cmd("compact", "--all", "--threshold", 0.3, "--lock", lock, "--json")
    assert r.code == 0 and r.err == "", r
    doc = r.json()
    assert (doc["ok"], doc["checked"]) == (True, 2)
    [job] = doc["compacted"]
    assert _job_head(job) == (1, "compact", "done", None)
    res = job["result"]
    assert res["size_before"] == before[1]["size_bytes"]
    assert res["size_after"] < res["size_before"]
    assert res["needles_copied"] == len(v1) - len(gone)

    after = n.volumes()
    assert after[1]["size_bytes"] == res["size_after"]
    assert (after[1]["compaction_revision"], after[1]["garbage_ratio"]) == (1, 0.0)
    assert after[1]["needles_live"] == len(v1) - len(gone)
    assert after[2]["compaction_revision"] == 0
    assert after[2]["size_bytes"] == before[2]["size_bytes"]

    got1 = n.client(lambda c: read_all(c, 1, list(v1)))
    assert got1 == {k: 404 if k in gone else v1[k] for k in v1}
    got2 = n.client(lambda c: read_all(c, 2, list(v2)))
    assert got2 == {k: 404 if k == 1 else v2[k] for k in v2}


def test_compact_exits_75_while_another_run_holds_the_lock(node: Node, tmp_path: Path) -> None:
    node.create(7)
    lock = tmp_path / "locks" / "compact.lock"
    lock.parent.mkdir()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for args in (("--volume", 7), ("--all", "--threshold", 0)):
            r = node.volume_cmd("compact", *args, "--lock", lock)
            assert r.code == 75 and r.out == "", r
            assert one_error_line(r) == f"pinhole: another compaction holds {lock}"
        assert node.volumes()[7]["compactions"] == 0
    finally:
        os.close(fd)
    r = node.volume_cmd("compact", "--volume", 7, "--lock", lock, "--json")
    assert r.code == 0 and r.err == "", r
    assert [j["volume_id"] for j in r.json()["compacted"]] == [7]
    assert node.volumes()[7]["compactions"] == 1


def test_compact_default_lock_is_one_per_node(node: Node, tmp_path: Path) -> None:
    safe = re.sub(r"[^0-9A-Za-z]", "_", node.url)
    lock = tmp_path / f"pinhole-compact-{safe}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = pinhole(
            "volume", "compact", "--volume", 7, "--node", node.url,
            "--secret-file", node.secret_file,
            cwd=node.work, env=_env(XDG_RUNTIME_DIR=str(tmp_path)),
        )  # fmt: skip
        assert r.code == 75 and r.out == "", r
        assert one_error_line(r) == f"pinhole: another compaction holds {lock}"
    finally:
        os.close(fd)


# -- errors: unreachable, secret, arguments --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("create", "--volume", 9),
        ("seal", "--volume", 1),
        ("verify", "--volume", 1),
        ("compact", "--volume", 1),
    ],
    ids=["list", "create", "seal", "verify", "compact"],
)
def test_unreachable_node_exits_3(
    node: Node, tmp_path: Path, closed_port: int, args: tuple[object, ...]
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    r = pinhole(
        "volume", *args, *_lock_for(args, tmp_path), "--node", url,
        "--secret-file", node.secret_file,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 3 and r.out == "", r
    assert one_error_line(r).startswith(f"pinhole: cannot reach {url}: ")


@pytest.mark.parametrize(
    "args",
    [
        ("create", "--volume", 9),
        ("readonly", "--volume", 1),
        ("verify", "--volume", 1),
        ("compact", "--volume", 1),
        ("list",),
    ],
    ids=["create", "readonly", "verify", "compact", "list"],
)
def test_missing_secret_exits_2(node: Node, tmp_path: Path, args: tuple[object, ...]) -> None:
    r = pinhole("volume", *args, *_lock_for(args, tmp_path), "--node", node.url, cwd=tmp_path)
    assert r.code == 2 and r.out == "", r
    assert one_error_line(r) == NO_SECRET
    assert 9 not in node.volumes()


def test_list_needs_the_secret(node: Node, tmp_path: Path) -> None:
    # The node's volumes are its topology: an operator's business, not anyone's.
    r = pinhole("volume", "list", "--json", "--node", node.url, cwd=tmp_path)
    assert r.code == 2 and one_error_line(r) == NO_SECRET, r
    r = pinhole(
        "volume", "list", "--json", "--node", node.url, "--secret-file", node.secret_file,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0 and r.err == "", r
    assert 1 in {v["volume_id"] for v in r.json()["volumes"]}


class _NotAStore(http.server.BaseHTTPRequestHandler):
    """Some other web service: 200 and HTML to everything."""

    def do_GET(self) -> None:
        body = b"<html>not a store node</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_node_url_that_is_not_a_store_gives_one_line(tmp_path: Path) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAStore) as srv:
        server = threading.Thread(target=srv.serve_forever, daemon=True)
        server.start()
        try:
            url = f"http://127.0.0.1:{srv.server_address[1]}"
            secret = credentials.ensure_secret_file(tmp_path / "secret")
            r = pinhole("volume", "list", "--node", url, "--secret-file", secret, cwd=tmp_path)
        finally:
            srv.shutdown()
            server.join(30)
    assert r.code == 1 and r.out == "", r
    assert one_error_line(r).startswith("pinhole: "), r


def test_secret_from_environment_or_default_dir(node: Node, tmp_path: Path) -> None:
    env = _env(**{credentials.SECRET_ENV: node.secret.decode()})
    r = pinhole("volume", "create", "--volume", 8, "--node", node.url, cwd=tmp_path, env=env)
    assert r == Result(0, f"volume 8 created on {node.url}\n", "")

    (tmp_path / ".pinhole").mkdir()
    (tmp_path / ".pinhole" / "cluster.secret").write_bytes(node.secret + b"\n")
    r = pinhole("volume", "readonly", "--volume", 8, "--node", node.url, cwd=tmp_path)
    assert r == Result(0, "volume 8 is read_only\n", "")
    assert node.volumes()[8]["mode"] == "read_only"

    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-cluster-secret-at-all\n")
    r = pinhole(
        "volume", "writable", "--volume", 8, "--node", node.url, "--secret-file", wrong,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 1 and r.out == "", r
    assert one_error_line(r) == (
        "pinhole: a valid internal credential is required (HTTP 401, unauthorized)"
    )
    assert node.volumes()[8]["mode"] == "read_only"

    short = _env(**{credentials.SECRET_ENV: "short"})
    r = pinhole("volume", "writable", "--volume", 8, "--node", node.url, cwd=node.work, env=short)
    assert r.code == 2 and r.out == "", r
    assert one_error_line(r) == "pinhole: PINHOLE_CLUSTER_SECRET is shorter than 16 bytes"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("readonly", "--volume", "abc"),
            "Invalid value for '--volume': 'abc' is not a valid integer",
        ),
        (("create", "--volume", "-1"), "Invalid value for '--volume'"),
        (("create",), "Missing option '--volume'"),
        (("compact", "--all", "--threshold", "1.5"), "Invalid value for '--threshold'"),
        (("compact", "--all", "--rate", "0"), "Invalid value for '--rate'"),
        (("frobnicate",), "No such command 'frobnicate'"),
    ],
    ids=["volume-abc", "volume-negative", "volume-missing", "threshold", "rate", "command"],
)
def test_bad_arguments_exit_2(
    closed_port: int, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    # Refused before any node is contacted: the node here does not even exist.
    r = pinhole("volume", *args, "--node", f"http://127.0.0.1:{closed_port}", cwd=tmp_path)
    assert r.code == 2 and r.out == "", r
    assert message in r.err, r


@pytest.mark.parametrize("command", ["verify", "compact"])
def test_neither_volume_nor_all_exits_2(node: Node, tmp_path: Path, command: str) -> None:
    r = node.volume_cmd(command, *_lock_for((command,), tmp_path))
    assert r.code == 2 and r.out == "", r
    assert one_error_line(r) == "pinhole: name a volume with --volume, or pass --all"


# -- store serve: configuration errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "toml", "message"),
    [
        (
            ("--volume-size-max", "banana"),
            None,
            "pinhole: --volume-size-max: not a size: 'banana'",
        ),
        (("--port", "99999"), None, "pinhole: store: port must be within 0..65535"),
        ((), "[store]\nbogus_key = 1\n", "pinhole: unknown key store.bogus_key"),
        (
            (),
            "[store.volume]\nsize_bytes_maxx = 1\n",
            "pinhole: unknown key store.volume.size_bytes_maxx",
        ),
        (
            (),
            '[store]\nread_queue_depth = "x"\n',
            "pinhole: store.read_queue_depth must be an integer",
        ),
    ],
    ids=["size", "port", "unknown-key", "unknown-nested-key", "wrong-type"],
)
def test_serve_refuses_bad_config_with_exit_2(
    tmp_path: Path, args: tuple[str, ...], toml: str | None, message: str
) -> None:
    secret = credentials.ensure_secret_file(tmp_path / "secret")
    pre: list[object] = []
    if toml is not None:
        (tmp_path / "conf.toml").write_text(toml)
        pre = ["--config", tmp_path / "conf.toml"]
    r = pinhole(
        *pre, "store", "serve", "--data", tmp_path / "data", "--port", "0",
        "--secret-file", secret, *args,
        cwd=tmp_path, timeout_s=20,  # a node that starts anyway is stopped by the timeout
    )  # fmt: skip
    assert r.code == 2 and r.out == "", r
    assert one_error_line(r) == message
    assert not (tmp_path / "data").exists()


def test_serve_reads_pinhole_toml_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "pinhole.toml").write_text("[store]\nprot = 8701\n")
    r = pinhole("store", "serve", "--data", tmp_path / "data", cwd=tmp_path, timeout_s=20)
    assert r.code == 2 and r.out == "", r
    assert one_error_line(r) == "pinhole: unknown key store.prot"
