"""Operator housekeeping against one real local cluster (`pinhole up --detach --stores 3`,
real processes on free ports), shared by the module: `pinhole compact --all` over every store
node the directory lists, `pinhole scrub status`, and metadata backup and restore (a backup
restored into the working cluster brings back exactly the state it holds; restore refuses
while the cluster runs and refuses a damaged backup, changing nothing)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ops import local_cluster as lc
from ops.housekeeping_cmds import volume_flags
from ops.volume_jobs import default_lock_path
from store.client import StoreClient
from store.volume import data_name

pytestmark = pytest.mark.crash
REPO = Path(__file__).resolve().parents[2]
COOKIE = 0x5EED_0F_C0FFEE_0077
PASSWORD = "correct horse battery staple"


@dataclass
class Cluster:
    data: Path
    cwd: Path
    runtime: Path  # $XDG_RUNTIME_DIR of the commands: the compaction locks live here
    layout: lc.Layout

    def pinhole(self, *args: object, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PINHOLE_CLUSTER_SECRET"}
        env["PYTHONPATH"] = str(REPO)
        env["XDG_RUNTIME_DIR"] = str(self.runtime)
        return subprocess.run(
            [sys.executable, "-m", "ops.cli", *(str(a) for a in args)],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def cluster_args(self) -> list[object]:
        return ["--directory", self.layout.directory_url, "--secret-file", self.layout.secret_file]

    def up(self) -> None:
        p = self.pinhole("up", "--data", self.data, "--detach")
        assert p.returncode == 0, p.stdout + p.stderr

    def down(self) -> None:
        p = self.pinhole("down", "--data", self.data)
        assert p.returncode == 0, p.stdout + p.stderr

    def store(self, i: int) -> StoreClient:
        return StoreClient(self.layout.store_url(i), credentials=self.layout.operator_credentials())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("house")
    data = tmp / "cluster"
    runtime = tmp / "run"
    runtime.mkdir()
    base = lc.free_port_base()
    c = Cluster(data, tmp, runtime, lc.Layout(root=data.resolve()))
    p = c.pinhole("up", "--data", data, "--port-base", base, "--stores", 3, "--detach")
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        layout = lc.load_layout(data.resolve())
        assert layout is not None
        c.layout = layout
        yield c
    finally:
        c.pinhole("down", "--data", data)


# -- the API, as a user -------------------------------------------------------------------------


def _call(
    method: str, url: str, *, token: str = "", body: bytes | None = None, ctype: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if ctype:
        headers["Content-Type"] = ctype
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def _json(method: str, url: str, doc: dict[str, Any], token: str = "") -> tuple[int, Any]:
    return _call(method, url, token=token, body=json.dumps(doc).encode(), ctype="application/json")


def _sign_up(api: str) -> str:
    status, doc = _json("POST", f"{api}/accounts", {"username": "ada", "password": PASSWORD})
    assert status == 201, doc
    status, doc = _json("POST", f"{api}/sessions", {"username": "ada", "password": PASSWORD})
    assert status in (200, 201), doc
    return str(doc["token"])


def _post_photo(api: str, token: str, seed: int) -> tuple[str, str]:
    """Uploads a photo, waits until its variants exist, posts it: (post id, its 640 JPEG URL)."""
    from ops.up_cmds import demo_png

    boundary = f"----pinhole{random.Random(seed).getrandbits(64):x}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="media_type"\r\n\r\nimage\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p{seed}.png"\r\n'
        "Content-Type: image/png\r\n\r\n",
    ]
    body = "".join(parts).encode() + demo_png(seed) + f"\r\n--{boundary}--\r\n".encode()
    status, doc = _call(
        "POST",
        f"{api}/media/upload",
        token=token,
        body=body,
        ctype=f"multipart/form-data; boundary={boundary}",
    )
    assert status == 201, doc
    media_id = doc["media_id"]
    deadline = time.monotonic() + 90
    while True:
        status, doc = _call("GET", f"{api}/media/{media_id}?wait_s=10", token=token)
        assert status == 200, doc
        if doc["status"] != "processing" or time.monotonic() > deadline:
            break
    assert doc["status"] == "ready", doc
    url = str(doc["variants"]["640"]["formats"]["jpeg"])
    status, post = _json("POST", f"{api}/posts", {"media_ids": [media_id]}, token)
    assert status == 201, post
    return str(post["post_id"]), url


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every database file (and WAL) the cluster keeps, by path under the root."""
    out = {}
    for name in ("directory/directory.sqlite3", "media/media.sqlite3", "f4/keys.sqlite3"):
        for suffix in ("", "-wal"):
            path = root / f"{name}{suffix}"
            if path.exists():
                out[f"{name}{suffix}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pinhole: "), p.stderr
    return lines[0]


# -- backup and restore --------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_a_backup_restored_into_the_cluster_brings_back_its_state(
    cluster: Cluster, tmp_path: Path
) -> None:
    api = cluster.layout.api_url + "/api/v1"
    token = _sign_up(api)
    first_post, first_url = _post_photo(api, token, seed=1)
    status, photo = _get(first_url)
    assert status == 200 and photo.startswith(b"\xff\xd8\xff")

    backup = tmp_path / "backup"
    p = cluster.pinhole("backup", "--data", cluster.data, "--out", backup, "--json")
    assert p.returncode == 0, p.stderr
    manifest = json.loads((backup / "manifest.json").read_text())
    assert json.loads(p.stdout)["files"] == manifest["files"]
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"directory/directory.sqlite3", "media/media.sqlite3", "f4/keys.sqlite3"}
    assert [f["path"] for f in manifest["files"] if f["sensitive"]] == ["f4/keys.sqlite3"]
    for f in files.values():
        copy = backup / f["stored"]
        assert copy.stat().st_size == f["size_bytes"]
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == f["sha256"]
        assert copy.read_bytes().startswith(b"SQLite format 3\x00")
    assert manifest["pinhole_version"] == "0.1.0"
    assert abs(manifest["created_unix_s"] - time.time()) < 120

    # More state after the backup: a second post.
    second_post, _ = _post_photo(api, token, seed=2)
    assert _call("GET", f"{api}/posts/{second_post}", token=token)[0] == 200

    cluster.down()
    # A damaged backup is refused before anything changes.
    before = _digests(cluster.data)
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    target = damaged / "media" / "media.sqlite3"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    p = cluster.pinhole("restore", "--data", cluster.data, "--from", damaged)
    assert p.returncode == 1, p.stdout + p.stderr
    line = _one_error_line(p)
    assert line.startswith("pinhole: the backup is damaged, nothing restored: media/media.sqlite3")
    assert "sha256" in line
    assert _digests(cluster.data) == before
    assert not list(cluster.data.rglob("*.restore-tmp"))
    assert not (cluster.data / "restore-previous").exists()

    p = cluster.pinhole("restore", "--data", cluster.data, "--from", backup, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)
    assert {f["path"] for f in result["restored"]} == set(files)
    assert result["not_in_backup"] == []
    for path, f in files.items():
        assert hashlib.sha256((cluster.data / path).read_bytes()).hexdigest() == f["sha256"]
        assert not Path(f"{cluster.data / path}-wal").exists()
    # The databases replaced are kept.
    previous = Path(result["previous_dir"])
    assert (previous / "media" / "media.sqlite3").exists()

    cluster.up()
    status, doc = _call("GET", f"{api}/posts/{first_post}", token=token)
    assert status == 200 and doc["post_id"] == first_post, doc
    status, _ = _call("GET", f"{api}/posts/{second_post}", token=token)
    assert status == 404
    status, again = _get(first_url)
    assert (status, again) == (200, photo)


def test_restore_refuses_while_the_cluster_runs(cluster: Cluster, tmp_path: Path) -> None:
    backup = tmp_path / "b"
    p = cluster.pinhole("backup", "--data", cluster.data, "--out", backup)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == f"backup of {cluster.data.resolve()} in {backup}:"
    assert "f4/keys.sqlite3" in p.stdout and "(sensitive: per-blob keys)" in p.stdout
    p = cluster.pinhole("restore", "--data", cluster.data, "--from", backup)
    assert p.returncode == 2
    line = _one_error_line(p)
    assert line.startswith(f"pinhole: the cluster in {cluster.data.resolve()} is running (api, ")
    assert line.endswith(f"`pinhole down --data {cluster.data.resolve()}` first")
    assert not list(cluster.data.rglob("*.restore-tmp"))
    # A second backup into the same directory is refused: backups are never overwritten.
    p = cluster.pinhole("backup", "--data", cluster.data, "--out", backup)
    assert p.returncode == 1 and "is not an empty directory" in _one_error_line(p)


# -- compact --all -------------------------------------------------------------------------------

# Volumes of the tests' own, created on the store nodes directly (the directory never hands
# them out): the test decides their garbage.
COMPACT_VID = 9001
SCRUB_VID = 9002


async def _fill(c: StoreClient, vid: int, *, keys: int, deleted: int) -> None:
    await c.create_volume(vid)
    rnd = random.Random(vid)
    for key in range(1, keys + 1):
        await c.put(vid, key, 0, COOKIE, rnd.randbytes(3000))
    for key in range(1, deleted + 1):
        assert await c.delete(vid, key) == 1


async def _volumes(c: StoreClient) -> dict[int, dict[str, Any]]:
    return {v["volume_id"]: v for v in await c.volumes()}


def test_compact_all_visits_every_store_node(cluster: Cluster) -> None:
    async def fill_all() -> dict[int, dict[int, dict[str, Any]]]:
        out = {}
        for i in (1, 2, 3):
            async with cluster.store(i) as c:
                await _fill(c, COMPACT_VID, keys=20, deleted=15)
                out[i] = await _volumes(c)
        return out

    before = asyncio.run(fill_all())
    for vols in before.values():
        assert vols[COMPACT_VID]["garbage_ratio"] > 0.5
        assert all(v["garbage_ratio"] < 0.3 for vid, v in vols.items() if vid != COMPACT_VID)

    # The cluster-wide lock held: exit 75, one line.
    lock = cluster.runtime / "compact-cluster.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = cluster.pinhole("compact", "--all", *cluster.cluster_args(), "--lock", lock)
        assert p.returncode == 75
        assert _one_error_line(p) == f"pinhole: another compaction holds {lock}"
    finally:
        os.close(fd)

    # store-2's own compaction lock held (a `pinhole volume compact` on it): it is skipped,
    # the others are compacted, exit 75 (try again later).
    node_lock = default_lock_path(cluster.layout.store_url(2))
    node_lock = cluster.runtime / node_lock.name
    fd = os.open(node_lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = cluster.pinhole("compact", "--all", *cluster.cluster_args(), "--rate", 50, "--json")
    finally:
        os.close(fd)
    assert p.returncode == 75, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] is False and doc["threshold"] == 0.3
    states = {n["node_id"]: n["state"] for n in doc["nodes"]}
    assert states == {"store-1": "done", "store-2": "locked", "store-3": "done"}
    for n in doc["nodes"]:
        if n["state"] == "done":
            assert n["checked"] == len(before[int(n["node_id"][-1])])
            [job] = n["compacted"]
            assert (job["volume_id"], job["state"]) == (COMPACT_VID, "done")
            assert job["result"]["needles_copied"] == 5

    # Again with nothing held: only store-2's volume is still due.
    p = cluster.pinhole("compact", "--all", *cluster.cluster_args())
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    s1, s2, s3 = (cluster.layout.store_url(i) for i in (1, 2, 3))
    n1, n3 = len(before[1]), len(before[3])
    assert lines[0] == f"store-1 ({s1}): nothing to compact ({n1} volumes below 30%)"
    assert lines[1] == f"store-2 ({s2}):"
    assert lines[2].startswith(f"  volume {COMPACT_VID}: ") and "reclaimed" in lines[2]
    assert lines[3] == f"store-3 ({s3}): nothing to compact ({n3} volumes below 30%)"

    async def after() -> list[tuple[dict[str, Any], list[bytes]]]:
        out = []
        for i in (1, 2, 3):
            async with cluster.store(i) as c:
                left = [(await c.get(COMPACT_VID, key, 0, COOKIE)).data for key in range(16, 21)]
                out.append(((await _volumes(c))[COMPACT_VID], left))
        return out

    rnd = random.Random(COMPACT_VID)
    kept = [rnd.randbytes(3000) for _ in range(20)][15:]
    for v, left in asyncio.run(after()):
        assert (v["compaction_revision"], v["garbage_ratio"], v["needles_live"]) == (1, 0.0, 5)
        assert left == kept


def test_compact_needs_all(cluster: Cluster) -> None:
    p = cluster.pinhole("compact", *cluster.cluster_args())
    assert p.returncode == 2
    assert _one_error_line(p).startswith("pinhole: pass --all")


# -- scrub status --------------------------------------------------------------------------------


def test_scrub_status_lists_every_volume_and_flags_corruption(cluster: Cluster) -> None:
    args = cluster.cluster_args()
    # The cluster's stores scrub daily: nothing scrubbed yet, nothing overdue.
    p = cluster.pinhole("scrub", "status", *args, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] is True
    assert [n["node_id"] for n in doc["nodes"]] == ["store-1", "store-2", "store-3"]
    for n in doc["nodes"]:
        assert (n["state"], n["interval_s"]) == ("ok", 86400.0)
        assert n["volumes"]
        for v in n["volumes"]:
            assert v["last_pass_unix_s"] is None and "never" in v["flags"], v
            assert "overdue" not in v["flags"] and "corrupt" not in v["flags"]

    # One sound pass on store-1, one that finds a flipped byte on store-2.
    async def prepare() -> None:
        async with cluster.store(1) as c:
            await _fill(c, SCRUB_VID, keys=10, deleted=0)
            await c.scrub(SCRUB_VID)
            assert (await c.wait_job(SCRUB_VID, "scrub"))["state"] == "done"
        async with cluster.store(2) as c:
            await _fill(c, SCRUB_VID, keys=10, deleted=0)
            await c.put(SCRUB_VID, 99, 0, COOKIE, b"q" * 2000)
        path = cluster.data / "store-2" / "volumes" / data_name(SCRUB_VID)
        offset = path.read_bytes().rindex(b"q" * 2000) + 100  # the needle's data
        fd = os.open(path, os.O_RDWR)
        try:
            os.pwrite(fd, bytes([os.pread(fd, 1, offset)[0] ^ 0x01]), offset)
        finally:
            os.close(fd)
        async with cluster.store(2) as c:
            await c.scrub(SCRUB_VID)
            job = await c.wait_job(SCRUB_VID, "scrub")
            assert job["result"]["corrupt_live"] == 1, job

    asyncio.run(prepare())
    p = cluster.pinhole("scrub", "status", *args, "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    nodes = {
        n["node_id"]: {v["volume_id"]: v for v in n["volumes"]}
        for n in json.loads(p.stdout)["nodes"]
    }
    sound, bad = nodes["store-1"][SCRUB_VID], nodes["store-2"][SCRUB_VID]
    assert (sound["flags"], sound["corrupt_found"], sound["passes"]) == ([], 0, 1)
    assert sound["bytes_scrubbed"] > 10 * 3000
    assert abs(sound["last_pass_unix_s"] - time.time()) < 120
    assert sound["next_due_unix_s"] == pytest.approx(sound["last_pass_unix_s"] + 86400)
    assert (bad["flags"], bad["corrupt_found"]) == (["corrupt"], 1)

    p = cluster.pinhole("scrub", "status", *args)
    assert p.returncode == 1
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["node", "volume", "last", "pass", "bytes", "corrupt", "next",
                                "due", "flags"]  # fmt: skip
    bad_row = next(
        line for line in lines if line.startswith("store-2") and f" {SCRUB_VID} " in line
    )
    assert bad_row.split()[-1] == "CORRUPT"
    never = next(line for line in lines if line.startswith("store-3"))
    assert "never" in never and never.split()[-1] == "NEVER"


def test_volume_flags_overdue_after_two_intervals() -> None:
    day = 86400.0
    now = 10 * day
    fresh = {"corrupt_found": 0, "last_pass_unix_s": now - day, "first_seen_unix_s": 0.0}
    assert volume_flags(fresh, day, now) == []
    stale = {**fresh, "last_pass_unix_s": now - 2 * day - 1}
    assert volume_flags(stale, day, now) == ["overdue"]
    # Never scrubbed: counted from the first sighting.
    new = {"corrupt_found": 0, "last_pass_unix_s": None, "first_seen_unix_s": now - day}
    assert volume_flags(new, day, now) == ["never"]
    old = {**new, "first_seen_unix_s": now - 3 * day}
    assert volume_flags(old, day, now) == ["overdue", "never"]
    # Scrubbing off (interval 0): never overdue; not met yet (first seen None): no date.
    assert volume_flags(stale, 0.0, now) == []
    unmet = {"corrupt_found": 2, "last_pass_unix_s": None, "first_seen_unix_s": None}
    assert volume_flags(unmet, day, now) == ["corrupt", "never"]
