"""f4 storage nodes as real processes (`python -m ops.cli f4 node serve`) reached through
HttpBlockStore over real HTTP: exact ranges, the answers for missing objects, unknown
nodes, bad names and wrong credentials, uploads that are whole or nothing across a kill -9,
a lost disk, and a whole cell (migrate, degraded reads, rebuild) spread over processes."""

from __future__ import annotations

import asyncio
import functools
import http.client
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from common import credentials
from common.credentials import Credentials, Purpose
from f4 import sidecar
from f4.async_blocks import PROCESS_DOWN_S, AsyncBlocks
from f4.block_store import block_name, sidecar_of
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.erasure import STRIPE_BLOCKS
from f4.errors import (
    BadObjectName,
    BlockCorrupt,
    BlockMissing,
    BlockUnreachable,
    F4Error,
    NodeNotServed,
    NodeUnreachable,
    ObjectMissing,
    UploadUnknown,
)
from f4.http_block_store import HttpBlockStore
from f4.local_block_store import TEMP_SUFFIX, LocalBlockStore
from f4.node_disk import RANGE_BYTES_MAX, UPLOAD_IDLE_S_MAX, NodeDisks
from f4.node_http import UPLOAD_CHUNK_BYTES_MAX
from f4.reader import Reader
from tests.f4.helpers import Blobs, random_blobs, sealed_volume

REPO = Path(__file__).parents[2]
START_S_MAX = 30.0
VID = 1
BLOCK = "v1.s0.b0.blk"
BLOCK_BYTES = 8192  # small blocks: several stripes from a few blobs


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != credentials.SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class NodeProcess:
    """`pinhole f4 node serve` for some nodes under `blocks`; restarts on the same port."""

    def __init__(self, tmp: Path, name: str, nodes: list[str], secret_file: Path) -> None:
        self.blocks = tmp / name / "blocks"
        self.log = tmp / name / "node.log"
        self.work = tmp / name / "work"  # cwd: no pinhole.toml
        self.work.mkdir(parents=True)
        self.nodes = nodes
        self.secret_file = secret_file
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "ops.cli", "f4", "node", "serve"]
        for n in self.nodes:
            cmd += ["--node", n]
        cmd += [
            "--blocks", str(self.blocks),
            "--port", str(self.port),
            "--secret-file", str(self.secret_file),
            "--log-level", "warning",
        ]  # fmt: skip
        self.log.write_bytes(b"")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.work, env=_env())
        deadline = time.monotonic() + START_S_MAX
        while time.monotonic() < deadline:
            m = re.search(r"f4 node listening on http://127\.0\.0\.1:(\d+)", self.log.read_text())
            if m:
                self.port = int(m[1])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the f4 node did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return credentials.ensure_secret_file(tmp_path / "secret")


@pytest.fixture
def operator(secret_file: Path) -> Credentials:
    return Credentials.from_secret(secret_file.read_bytes().strip())


@pytest.fixture
def node(tmp_path: Path, secret_file: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path, "p0", ["n00", "n01", "n02"], secret_file)
    proc.start()
    yield proc
    proc.stop()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    data: bytes


def _raw(method: str, url: str, header: str | None, body: bytes | None = None) -> Answer:
    """One request with the target exactly as given (no dot-segment normalising)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers={"Authorization": header} if header else {})
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def _code(resp: Answer) -> str:
    return str(json.loads(resp.data)["error"]["code"])


def test_ranges_missing_objects_names_and_credentials(
    node: NodeProcess, operator: Credentials
) -> None:
    store = HttpBlockStore({n: node.url for n in node.nodes} | {"n99": node.url}, operator)
    data = random.Random(1).randbytes(200_000)
    store.put("n00", BLOCK, [data[:70_000], data[70_000:]])
    assert (node.blocks / "n00" / BLOCK).read_bytes() == data
    assert store.get(node.nodes[0], BLOCK) == data
    assert store.get_range("n00", BLOCK, 0, 1) == data[:1]
    assert store.get_range("n00", BLOCK, 12_345, 4_321) == data[12_345:16_666]
    assert store.get_range("n00", BLOCK, len(data) - 7, 7) == data[-7:]
    assert store.size("n00", BLOCK) == len(data)
    assert store.exists("n00", BLOCK) and not store.exists("n01", BLOCK)
    assert store.list("n00") == [BLOCK] and store.list("n01") == []
    with pytest.raises(BlockMissing):
        store.get_range("n00", BLOCK, len(data) - 7, 8)  # one byte short
    for call in (
        lambda: store.get("n01", BLOCK),
        lambda: store.get_range("n01", BLOCK, 0, 10),
        lambda: store.size("n01", "v1.f4idx"),
    ):
        with pytest.raises(BlockMissing):
            call()
    with pytest.raises(BlockUnreachable, match="not served"):  # n99 points at this process
        store.get("n99", BLOCK)
    assert not store.node_up("n99") and store.node_up("n00")

    blocks = operator.header(Purpose.BLOCKS)
    base = node.url + "/b/"
    resp = _raw("GET", f"{base}n00/{BLOCK}?offset=5&length=3", blocks)
    assert resp.status == 200 and resp.data == data[5:8]
    resp = _raw("HEAD", f"{base}n00/{BLOCK}", blocks)
    assert resp.status == 200 and resp.headers["x-pinhole-size"] == str(len(data))
    assert (_raw("HEAD", f"{base}n01/{BLOCK}", blocks)).status == 404
    resp = _raw("GET", f"{base}n01/{BLOCK}", blocks)
    assert (resp.status, _code(resp)) == (404, "block_missing")
    resp = _raw("GET", f"{base}n42/{BLOCK}", blocks)
    assert (resp.status, _code(resp)) == (404, "node_not_served")
    for bad in ("..", "..%2F..%2Fsecret", "x.blk", f"{BLOCK}{TEMP_SUFFIX}", "v01.f4idx"):
        resp = _raw("GET", f"{base}n00/{bad}", blocks)
        assert (resp.status, _code(resp)) == (400, "bad_name"), bad
    resp = _raw("GET", f"{base}.hidden/{BLOCK}", blocks)
    assert (resp.status, _code(resp)) == (400, "bad_name")
    for query in (
        f"offset=0&length={RANGE_BYTES_MAX + 1}",
        "offset=-1&length=3",
        "offset=01&length=3",
        "length=3",
    ):
        resp = _raw("GET", f"{base}n00/{BLOCK}?{query}", blocks)
        assert (resp.status, _code(resp)) == (400, "bad_request"), query

    # Credentials: blocks only on /b/, admin only on /status, /healthz open.
    for header in (None, operator.header(Purpose.READ), operator.header(Purpose.ADMIN)):
        resp = _raw("GET", f"{base}n00/{BLOCK}", header)
        assert (resp.status, _code(resp)) == (401, "unauthorized")
        assert _raw("DELETE", f"{base}n00/{BLOCK}", header).status == 401
    assert _raw("GET", node.url + "/status", blocks).status == 401
    resp = _raw("GET", node.url + "/status", operator.header(Purpose.ADMIN))
    status = {n["node"]: n for n in json.loads(resp.data)["nodes"]}
    assert status["n00"]["objects"] == 1 and status["n00"]["bytes"] == len(data)
    assert status["n01"]["objects"] == 0 and status["n00"]["free_bytes"] > 0
    assert _raw("GET", node.url + "/healthz", None).status == 200
    assert (node.blocks / "n00" / BLOCK).read_bytes() == data  # the refused DELETEs did nothing

    # An upload grows only at its size; a chunk over the limit is refused before it is read.
    resp = _raw("POST", f"{base}n01/{BLOCK}/uploads", blocks)
    upload = json.loads(resp.data)["upload"]
    chunk = f"{base}n01/{BLOCK}/uploads/{upload}"
    assert _raw("PUT", f"{chunk}?offset=0", blocks, b"abc").status == 200
    resp = _raw("PUT", f"{chunk}?offset=0", blocks, b"abc")
    assert (resp.status, _code(resp)) == (409, "upload_conflict")
    assert _raw("PUT", f"{chunk}?offset=3", blocks, b"def").status == 200
    assert _raw("PUT", f"{chunk}?offset=6", blocks, bytes(8 << 20 | 1)).status == 413
    assert not store.exists("n01", BLOCK)  # nothing before the commit
    assert _raw("POST", f"{chunk}/commit", blocks).status == 200
    assert store.get("n01", BLOCK) == b"abcdef"
    resp = _raw("POST", f"{chunk}/commit", blocks)
    assert (resp.status, _code(resp)) == (404, "upload_unknown")
    writer = store.open_writer("n02", BLOCK)
    writer.write(b"never committed")
    assert len(list((node.blocks / "n02").glob(f"*{TEMP_SUFFIX}"))) == 1
    writer.abort()
    assert list((node.blocks / "n02").iterdir()) == []

    # A writer sends whole chunks of at most the limit, whatever the pieces it is given.
    big = random.Random(2).randbytes(UPLOAD_CHUNK_BYTES_MAX * 2 + 5)
    cuts = [0, 3, UPLOAD_CHUNK_BYTES_MAX - 1, UPLOAD_CHUNK_BYTES_MAX * 2 + 1, len(big)]
    store.put("n02", "v1.s0.b1.blk", [big[a:b] for a, b in itertools.pairwise(cuts)])
    assert (node.blocks / "n02" / "v1.s0.b1.blk").read_bytes() == big
    assert store.get("n02", "v1.s0.b1.blk") == big
    # Large pieces go out straight from the caller's memory, small ones are gathered; either
    # way the writer is done with a piece when write returns (the caller reuses its buffer).
    window = bytearray(3 << 20)
    writer = store.open_writer("n02", "v1.s0.b2.blk")
    for at, size in ((0, 3 << 20), (3 << 20, 100_000), ((3 << 20) + 100_000, 1 << 20)):
        window[:size] = big[at : at + size]
        writer.write(memoryview(window)[:size])
        window[:size] = bytes(size)
    writer.commit()
    assert store.get("n02", "v1.s0.b2.blk") == big[: (3 << 20) + 100_000 + (1 << 20)]

    # Deletes are idempotent; a lost disk is unreachable, the other disks still serve.
    store.delete("n01", BLOCK)
    store.delete("n01", BLOCK)
    assert not (node.blocks / "n01" / BLOCK).exists()
    shutil.rmtree(node.blocks / "n01")
    with pytest.raises(BlockUnreachable, match="is gone"):
        store.get("n01", BLOCK)
    resp = _raw("GET", f"{base}n01/", blocks)
    assert (resp.status, _code(resp)) == (503, "node_unreachable")
    assert not store.node_up("n01") and not store.exists("n01", BLOCK)
    assert store.get("n00", BLOCK) == data


def test_a_killed_upload_leaves_the_old_object_or_nothing(
    node: NodeProcess, operator: Credentials
) -> None:
    store = HttpBlockStore({n: node.url for n in node.nodes}, operator)
    old = b"old version" * 1000
    store.put("n00", BLOCK, [old])
    blocks = operator.header(Purpose.BLOCKS)
    uploads = []
    for n in ("n00", "n01"):  # over the old object, and a new name
        upload = json.loads(_raw("POST", f"{node.url}/b/{n}/{BLOCK}/uploads", blocks).data)
        url = f"{node.url}/b/{n}/{BLOCK}/uploads/{upload['upload']}"
        assert _raw("PUT", f"{url}?offset=0", blocks, b"new" * 5000).status == 200
        uploads.append(url)
    temps = sorted(node.blocks.glob(f"*/*{TEMP_SUFFIX}"))
    assert len(temps) == 2 and all(t.stat().st_size == 15000 for t in temps)
    node.kill()
    with pytest.raises(BlockUnreachable):
        store.get("n00", BLOCK)
    assert (node.blocks / "n00" / BLOCK).read_bytes() == old
    assert not (node.blocks / "n01" / BLOCK).exists()
    node.start()
    assert sorted(node.blocks.glob(f"*/*{TEMP_SUFFIX}")) == []
    assert store.get("n00", BLOCK) == old
    assert not store.exists("n01", BLOCK) and store.list("n01") == []
    resp = _raw("POST", f"{uploads[0]}/commit", blocks)  # the restarted node knows it not
    assert (resp.status, _code(resp)) == (404, "upload_unknown")
    assert store.get("n00", BLOCK) == old


def test_idle_uploads_expire_and_names_are_checked_first(tmp_path: Path) -> None:
    disks = NodeDisks(tmp_path, ["n00"])
    disks.create_directories()
    upload = disks.begin("n00", BLOCK)
    assert disks.append("n00", BLOCK, upload, 0, b"abc") == 3
    assert disks.expire_idle(time.monotonic() + UPLOAD_IDLE_S_MAX / 2) == 0
    assert len(list((tmp_path / "n00").glob(f"*{TEMP_SUFFIX}"))) == 1
    assert disks.expire_idle(time.monotonic() + UPLOAD_IDLE_S_MAX + 1) == 1
    assert list((tmp_path / "n00").iterdir()) == []
    with pytest.raises(UploadUnknown):
        disks.commit("n00", BLOCK, upload)
    with pytest.raises(BadObjectName):
        disks.begin("n00", "../n00/v1.f4idx")
    assert list(tmp_path.iterdir()) == [tmp_path / "n00"]


@pytest.mark.parametrize("nowait", [True, False])
def test_a_checked_read_tells_a_lost_disk_from_a_missing_block(
    tmp_path: Path, nowait: bool
) -> None:
    disks = NodeDisks(tmp_path, ["n00", "n01"])
    disks.create_directories()
    data = random.Random(5).randbytes(10 * 1024 + 100)
    (tmp_path / "n00" / BLOCK).write_bytes(data)
    (tmp_path / "n00" / sidecar_of(BLOCK)).write_bytes(
        sidecar.encode(sidecar.sums_of(data), len(data))
    )
    read = functools.partial(disks.read_checked, nowait=nowait)
    assert read("n00", BLOCK, 2048, 4096) == data[2048:6144]
    assert read("n00", BLOCK, 8192, len(data) - 8192) == data[8192:]  # up to the block's end
    with pytest.raises(ObjectMissing):
        read("n01", BLOCK, 0, 1024)
    with pytest.raises(NodeNotServed):
        read("n02", BLOCK, 0, 1024)
    with pytest.raises(BadObjectName):
        read("n00", "../n01/" + BLOCK, 0, 1024)
    raw = bytearray(data)
    raw[5000] ^= 1
    (tmp_path / "n00" / BLOCK).write_bytes(raw)
    with pytest.raises(BlockCorrupt, match="block offset 4096"):
        read("n00", BLOCK, 2048, 4096)
    shutil.rmtree(tmp_path / "n00")  # a lost disk: unreachable, not a missing block
    with pytest.raises(NodeUnreachable):
        read("n00", BLOCK, 0, 1024)


# -- a cell over storage node processes ----------------------------------------------------


def _cell(
    tmp: Path, procs: list[NodeProcess], operator: Credentials, volumes: Path
) -> tuple[Cell, F4Config]:
    nodes = tuple(sorted((F4Node(n, f"r{n}", p.url) for p in procs for n in p.nodes), key=str))
    assert len(nodes) == STRIPE_BLOCKS
    config = F4Config(
        cell_root=tmp / "cell",
        haystack_dir=volumes,
        nodes=nodes,
        block_bytes=BLOCK_BYTES,
        rebuild_mb_s=0.0,
        age_s_min=0.0,
    )
    return Cell(config, credentials=operator), config


def _read_all(cell: Cell, blobs: Blobs) -> Reader:
    reader = Reader(cell.store, cell.keys)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data
    return reader


def _start(procs: list[NodeProcess]) -> None:
    for p in procs:
        p.start()


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    found = random_blobs(random.Random(5), 80)
    sealed_volume(tmp_path / "vols", VID, found)
    return found


def test_migrate_onto_two_processes_reads_back(
    tmp_path: Path, secret_file: Path, operator: Credentials, blobs: Blobs
) -> None:
    names = [f"n{i:02d}" for i in range(STRIPE_BLOCKS)]
    procs = [
        NodeProcess(tmp_path, "a", names[:7], secret_file),
        NodeProcess(tmp_path, "b", names[7:], secret_file),
    ]
    try:
        _start(procs)
        cell, _ = _cell(tmp_path, procs, operator, tmp_path / "vols")
        try:
            mark = cell.migrate(VID)
            assert mark["blobs"] == mark["blobs_checked"] == len(blobs)
            stripes = mark["stripes"]
            assert stripes >= 2
            for s in range(stripes):  # each block on its node's process, none in the cell
                for b in range(STRIPE_BLOCKS):
                    held = [p for p in procs if list(p.blocks.glob(f"*/{block_name(VID, s, b)}"))]
                    assert len(held) == 1
            assert not (tmp_path / "cell" / "blocks").exists()
            reader = _read_all(cell, blobs)
            assert reader.counter.degraded_reads == 0
            assert cell.verify(VID).ok
            assert cell.failure_domains()["nodes_up"] == STRIPE_BLOCKS
        finally:
            cell.close()
    finally:
        for p in procs:
            p.stop()


def test_a_killed_process_reads_degraded_and_its_wiped_disks_are_rebuilt(
    tmp_path: Path, secret_file: Path, operator: Credentials, blobs: Blobs
) -> None:
    names = [f"n{i:02d}" for i in range(STRIPE_BLOCKS)]
    # Nodes dealt round-robin (4 + 4 + 3 + 3): the 3 index copies sit on consecutive
    # nodes, so on 3 different processes.
    procs = [NodeProcess(tmp_path, p, names[i::4], secret_file) for i, p in enumerate("abcd")]
    try:
        _start(procs)
        cell, _ = _cell(tmp_path, procs, operator, tmp_path / "vols")
        try:
            stripes = cell.migrate(VID)["stripes"]
            victim = procs[1]  # it holds one index copy too
            assert list(victim.blocks.glob("*/v1.f4idx"))
            lost = sorted(p.name for p in victim.blocks.glob("*/*.blk"))
            assert len(lost) == 4 * stripes  # 4 blocks of every stripe
            victim.kill()
            reader = _read_all(cell, blobs)
            assert reader.counter.degraded_reads > 0
            assert cell.failure_domains()["nodes_up"] == STRIPE_BLOCKS - 4
            damaged = cell.verify(VID)
            assert not damaged.ok and len(damaged.damage) == 4 * stripes

            shutil.rmtree(victim.blocks)  # its disks replaced, empty
            victim.start()
            assert all(not any((victim.blocks / n).iterdir()) for n in victim.nodes)
            stats = cell.rebuild(VID)
            assert stats.blocks_rebuilt == 4 * stripes
            after = cell.verify(VID)
            assert after.ok and after.index_copies_ok == after.index_copies_expected == 3
            assert sorted(p.name for p in victim.blocks.glob("*/*.blk")) == lost
            health = cell.stripe_health(VID, cell.verify(VID))
            assert [(h.blocks_present, h.blocks_healthy) for h in health] == [
                (STRIPE_BLOCKS, STRIPE_BLOCKS)
            ] * stripes
            reader = _read_all(cell, blobs)
            assert reader.counter.degraded_reads == 0
        finally:
            cell.close()
    finally:
        for p in procs:
            p.stop()


def test_the_cell_store_mixes_local_and_remote_nodes(
    tmp_path: Path, secret_file: Path, operator: Credentials, blobs: Blobs
) -> None:
    names = [f"n{i:02d}" for i in range(STRIPE_BLOCKS)]
    proc = NodeProcess(tmp_path, "a", names[:7], secret_file)
    try:
        proc.start()
        nodes = tuple(F4Node(n, url=proc.url if n in proc.nodes else "") for n in names)
        config = F4Config(
            cell_root=tmp_path / "cell",
            haystack_dir=tmp_path / "vols",
            nodes=nodes,
            block_bytes=BLOCK_BYTES,
            age_s_min=0.0,
        )
        with pytest.raises(F4Error, match="blocks credential"):
            Cell(config)
        cell = Cell(config, credentials=operator)
        try:
            assert cell.store.nodes() == names
            mark = cell.migrate(VID)
            local = sorted(p.name for p in (tmp_path / "cell" / "blocks").glob("*/*.blk"))
            remote = sorted(p.name for p in proc.blocks.glob("*/*.blk"))
            assert len(local) == len(remote) == 7 * mark["stripes"]
            _read_all(cell, blobs)
        finally:
            cell.close()
    finally:
        proc.stop()


def test_a_checked_range_is_checked_where_the_block_is(
    node: NodeProcess, operator: Credentials
) -> None:
    """One request per checked range: the storage node reads the sums of just the chunks a
    range covers, checks, and answers the bytes or 503 block_corrupt; HttpBlockStore,
    AsyncBlocks (the name node's) and LocalBlockStore over the same files agree."""
    chunk = sidecar.CHUNK_BYTES
    data = random.Random(3).randbytes(10 * chunk + 100)  # a short last chunk
    sums = sidecar.SidecarBuilder()
    sums.update(data)
    store = HttpBlockStore({n: node.url for n in node.nodes}, operator)
    store.put("n00", BLOCK, [data])
    store.put("n00", sidecar_of(BLOCK), [sums.encode()])
    local = LocalBlockStore(node.blocks, node.nodes)

    async def via_async(offset: int, length: int) -> bytes:
        with ThreadPoolExecutor(1) as pool:
            blocks = AsyncBlocks(
                local, pool, urls={n: node.url for n in node.nodes}, credentials=operator
            )
            try:
                return await blocks.get_checked_range("n00", BLOCK, offset, length)
            finally:
                await blocks.close()

    def every_reader(offset: int, length: int) -> list[Callable[[], bytes]]:
        return [
            lambda: store.get_checked_range("n00", BLOCK, offset, length),
            lambda: local.get_checked_range("n00", BLOCK, offset, length),
            lambda: asyncio.run(via_async(offset, length)),
        ]

    for offset, length in ((0, chunk), (2 * chunk, 3 * chunk), (10 * chunk, 100), (0, len(data))):
        for read in every_reader(offset, length):
            assert read() == data[offset : offset + length]

    blocks = operator.header(Purpose.BLOCKS)
    base = f"{node.url}/b/n00/"
    for target in (
        f"{BLOCK}?offset=1&length={chunk}",  # not on a chunk boundary
        f"{BLOCK}?offset=0&length={chunk + 1}",  # ends off a boundary, not at the block's end
        f"{BLOCK}?offset=0&length={chunk}&checked=2",
        f"{sidecar_of(BLOCK)}?offset=0&length=8&checked=1",  # only blocks are read checked
    ):
        resp = _raw("GET", base + target + ("" if "checked" in target else "&checked=1"), blocks)
        assert (resp.status, _code(resp)) == (400, "bad_request"), target

    # One flipped byte in chunk 4: a range over it is never answered, the others still are.
    path = node.blocks / "n00" / BLOCK
    raw = bytearray(path.read_bytes())
    raw[4 * chunk + 17] ^= 0xFF
    path.write_bytes(raw)
    for read in every_reader(3 * chunk, 2 * chunk):
        with pytest.raises(BlockCorrupt):
            read()
    resp = _raw("GET", f"{base}{BLOCK}?offset={4 * chunk}&length={chunk}&checked=1", blocks)
    assert (resp.status, _code(resp), resp.headers["x-pinhole-error"]) == (
        503,
        "block_corrupt",
        "block_corrupt",
    )
    for read in every_reader(5 * chunk, chunk):
        assert read() == data[5 * chunk : 6 * chunk]
    # Unchecked reads still return the bytes as they are (rebuild and scrub compare them).
    assert store.get_range("n00", BLOCK, 4 * chunk, chunk) == raw[4 * chunk : 5 * chunk]

    # A block without its sidecar is missing, as a block without its file is.
    store.delete("n00", sidecar_of(BLOCK))
    for read in every_reader(0, chunk):
        with pytest.raises(BlockMissing):
            read()


def test_ranges_of_one_process_come_in_one_request_each_as_a_single_get_answers(
    node: NodeProcess, operator: Credentials
) -> None:
    """POST /ranges answers each range as its own checked GET would (the bytes, or the
    status and code in X-Pinhole-Ranges), in order; AsyncBlocks.get_checked_ranges sends a
    process's ranges in one request and returns each fault as a value; a malformed body is
    a 400 for the whole request."""
    chunk = sidecar.CHUNK_BYTES
    rng = random.Random(6)
    store = HttpBlockStore({n: node.url for n in node.nodes}, operator)
    data = {}
    for n in ("n00", "n01", "n02"):
        data[n] = rng.randbytes(6 * chunk)
        sums = sidecar.SidecarBuilder()
        sums.update(data[n])
        store.put(n, BLOCK, [data[n]])
        store.put(n, sidecar_of(BLOCK), [sums.encode()])
    path = node.blocks / "n01" / BLOCK
    raw = bytearray(path.read_bytes())
    raw[2 * chunk + 5] ^= 0xFF  # n01's chunk 2 is corrupt
    path.write_bytes(raw)
    other = block_name(VID, 0, 5)  # never written
    wants = [
        ("n00", BLOCK, chunk, 2 * chunk),
        ("n01", BLOCK, 2 * chunk, chunk),
        ("n02", BLOCK, 0, 6 * chunk),
        ("n00", other, 0, chunk),
        ("n01", BLOCK, 3 * chunk, chunk),
    ]
    blocks = operator.header(Purpose.BLOCKS)
    body = "".join(f"{n} {b} {o} {ln}\n" for n, b, o, ln in wants).encode()
    resp = _raw("POST", f"{node.url}/ranges", blocks, body)
    assert resp.status == 200
    entries = resp.headers["x-pinhole-ranges"].split(",")
    assert entries[0] == entries[2] == entries[4] == "200"
    assert entries[1] == "503:block_corrupt"
    assert entries[3].startswith("404:")
    good = data["n00"][chunk : 3 * chunk] + data["n02"] + data["n01"][3 * chunk : 4 * chunk]
    assert resp.data == good
    for n, b, o, ln in (wants[1], wants[3]):  # the same faults as single GETs answer
        single = _raw("GET", f"{node.url}/b/{n}/{b}?offset={o}&length={ln}&checked=1", blocks)
        assert f"{single.status}:{_code(single)}" in entries

    async def batched() -> tuple[list[bytes | Exception], int]:
        with ThreadPoolExecutor(1) as pool:
            client = AsyncBlocks(
                store, pool, urls={n: node.url for n in node.nodes}, credentials=operator
            )
            try:
                got: list[bytes | Exception] = list(await client.get_checked_ranges(wants))
                assert client._http is not None
                return got, client._http.statistics().requests_total
            finally:
                await client.close()

    got, requests = asyncio.run(batched())
    assert requests == 1
    assert got[0] == data["n00"][chunk : 3 * chunk]
    assert isinstance(got[1], BlockCorrupt)
    assert got[2] == data["n02"]
    assert isinstance(got[3], BlockMissing)
    assert got[4] == data["n01"][3 * chunk : 4 * chunk]

    for bad in (
        b"",
        b"n00 " + BLOCK.encode() + b" 0\n",  # three fields
        b"n00 " + BLOCK.encode() + b" 0 x\n",
        "".join(f"n00 {BLOCK} 0 {chunk}\n" for _ in range(15)).encode(),  # over RANGES_MAX
        f"n00 {BLOCK} 0 {RANGE_BYTES_MAX}\nn01 {BLOCK} 0 {chunk}\n".encode(),  # over the bytes
        b"\xff\n",
    ):
        resp = _raw("POST", f"{node.url}/ranges", blocks, bad)
        assert (resp.status, _code(resp)) == (400, "bad_request"), bad
    assert _raw("POST", f"{node.url}/ranges", None, body).status == 401
    assert _raw("GET", f"{node.url}/ranges", blocks).status == 405


def test_a_dead_process_is_skipped_for_a_moment_then_read_again(
    node: NodeProcess, operator: Credentials
) -> None:
    """After a refused connect, the name node's client answers unreachable at once for
    PROCESS_DOWN_S (reads go degraded without a failed connect each), then asks again."""
    chunk = sidecar.CHUNK_BYTES
    data = random.Random(4).randbytes(4 * chunk)
    sums = sidecar.SidecarBuilder()
    sums.update(data)
    store = HttpBlockStore({n: node.url for n in node.nodes}, operator)
    store.put("n01", BLOCK, [data])
    store.put("n01", sidecar_of(BLOCK), [sums.encode()])

    async def go() -> None:
        with ThreadPoolExecutor(1) as pool:
            blocks = AsyncBlocks(
                store, pool, urls={n: node.url for n in node.nodes}, credentials=operator
            )
            try:
                assert await blocks.get_checked_range("n01", BLOCK, 0, chunk) == data[:chunk]
                node.kill()
                with pytest.raises(BlockUnreachable):
                    await blocks.get_checked_range("n01", BLOCK, 0, chunk)
                with pytest.raises(BlockUnreachable, match="moments ago"):
                    await blocks.get_checked_range("n02", BLOCK, 0, chunk)  # same process
                node.start()  # the same port
                deadline = time.monotonic() + PROCESS_DOWN_S + 10
                while True:
                    try:
                        got = await blocks.get_checked_range("n01", BLOCK, chunk, chunk)
                        break
                    except BlockUnreachable:
                        assert time.monotonic() < deadline, "the process was never asked again"
                        await asyncio.sleep(0.05)
                assert got == data[chunk : 2 * chunk]
            finally:
                await blocks.close()

    asyncio.run(go())


def test_metrics_count_reads_corruption_uploads_and_disks(
    node: NodeProcess, operator: Credentials
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    chunk = sidecar.CHUNK_BYTES
    data = random.Random(5).randbytes(8 * chunk)
    sums = sidecar.SidecarBuilder()
    sums.update(data)
    store = HttpBlockStore({n: node.url for n in node.nodes}, operator)
    store.put("n00", BLOCK, [data[: 4 * chunk], data[4 * chunk :]])  # two pieces, one chunk
    store.put("n00", sidecar_of(BLOCK), [sums.encode()])
    for offset in (0, 2 * chunk, 5 * chunk):
        assert store.get_checked_range("n00", BLOCK, offset, chunk) == data[offset : offset + chunk]
    path = node.blocks / "n00" / BLOCK
    raw = bytearray(path.read_bytes())
    raw[7 * chunk] ^= 1
    path.write_bytes(raw)
    with pytest.raises(BlockCorrupt):
        store.get_checked_range("n00", BLOCK, 7 * chunk, chunk)
    assert store.get_range("n00", BLOCK, 0, 10) == data[:10]
    shutil.rmtree(node.blocks / "n02")  # a lost disk

    blocks = operator.header(Purpose.BLOCKS)
    assert _raw("GET", node.url + "/metrics", blocks).status == 401
    resp = _raw("GET", node.url + "/metrics", operator.header(Purpose.METRICS))
    assert resp.status == 200
    got = {
        (s.name, s.labels.get("disk", "")): s.value
        for family in text_string_to_metric_families(resp.data.decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }
    checked = (
        got[("pinhole_f4_node_checked_reads_inline_total", "")]
        + got[("pinhole_f4_node_checked_reads_threaded_total", "")]
    )
    assert checked == 3
    assert got[("pinhole_f4_node_ranges_corrupt_total", "")] == 1
    assert got[("pinhole_f4_node_range_reads_total", "")] == 1
    assert got[("pinhole_f4_node_bytes_read_total", "")] == 3 * chunk + 10
    assert got[("pinhole_f4_node_chunks_written_total", "")] == 2  # the block's, the sidecar's
    assert got[("pinhole_f4_node_bytes_written_total", "")] == len(data) + len(sums.encode())
    assert got[("pinhole_f4_node_commits_total", "")] == 2
    assert got[("pinhole_f4_disk_objects", "n00")] == 2
    assert got[("pinhole_f4_disk_bytes", "n00")] == len(data) + len(sums.encode())
    assert got[("pinhole_f4_disk_up", "n00")] == 1 and got[("pinhole_f4_disk_up", "n02")] == 0
