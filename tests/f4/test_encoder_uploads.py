"""The migration writes a stripe's 14 blocks at the same time (f4.stripe_upload) and builds
the next window meanwhile, never in a window still being written; a block write, commit or
put that fails while the others are in flight stops the migration with no stripe recorded
past it, no block half written and no upload left open, and the resumed run ends
byte-identical to an uninterrupted one. The same with a real storage node
process killed -9 in the middle of a migration, and the one-request put a storage node
takes for an object of one chunk."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from common import credentials
from common.credentials import Credentials, Purpose
from f4 import encoder
from f4 import index as index_file
from f4.block_store import BlockStore, BlockWriter, Buffer, block_name, sidecar_name
from f4.encoder import Migration, MigrationStats, journal_path
from f4.erasure import STRIPE_BLOCKS
from f4.errors import BlockUnreachable, IndexUnavailable
from f4.http_block_store import HttpBlockStore
from f4.keystore import KeyStore
from f4.local_block_store import TEMP_SUFFIX, LocalBlockStore
from f4.needle_source import NeedleSource
from f4.node_http import UPLOAD_CHUNK_BYTES_MAX
from f4.reader import Reader
from f4.rebuild import verify
from tests.f4.faulty_store import FaultyStore
from tests.f4.helpers import SMALL_BLOCK, Blobs, make_cell, random_blobs, sealed_volume
from tests.f4.test_node_service import NodeProcess, _code, _raw

VID = 4
HOLD_S_MAX = 30.0  # how long a held window waits for the next one to be built


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return credentials.ensure_secret_file(tmp_path / "secret")


@pytest.fixture
def operator(secret_file: Path) -> Credentials:
    return Credentials.from_secret(secret_file.read_bytes().strip())


def _migrate(
    vols: Path, store: BlockStore, keys: KeyStore, work: Path, block_bytes: int = SMALL_BLOCK
) -> MigrationStats:
    source = NeedleSource(vols, VID)
    try:
        return Migration(source, store, keys, work, block_bytes=block_bytes).run()
    finally:
        source.close()


def _stripes_done(work: Path) -> int:
    return int(json.loads(journal_path(work, VID).read_bytes())["stripes_done"])


def _tree(root: Path) -> dict[str, bytes]:
    """<node>/<object> -> bytes under a blocks root; temporaries left out."""
    return {
        f"{p.parent.name}/{p.name}": p.read_bytes()
        for p in sorted(root.glob("*/*"))
        if not p.name.endswith(TEMP_SUFFIX)
    }


def _read_all(store: BlockStore, keys: KeyStore, blobs: Blobs) -> None:
    reader = Reader(store, keys)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


# Stripe 1 fails while stripe 0's blocks may still be in flight. Two windows per block
# ("windowed") exercise writes and commits; one window ("whole") the whole-block puts.
FAULTS = {
    "first window of a data block (the commit already queued)": (
        "windowed",
        lambda f: f.fail_writes.update({block_name(VID, 1, 3): 0}),
        block_name(VID, 1, 3),
    ),
    "last window of a parity block": (
        "windowed",
        lambda f: f.fail_writes.update({block_name(VID, 1, 12): 1}),
        block_name(VID, 1, 12),
    ),
    "commit of a data block": (
        "windowed",
        lambda f: f.fail_commits.add(block_name(VID, 1, 5)),
        block_name(VID, 1, 5),
    ),
    "sidecar of a parity block": (
        "whole",
        lambda f: f.fail_puts.add(sidecar_name(VID, 1, 11)),
        block_name(VID, 1, 11),
    ),
    "whole data block": (
        "whole",
        lambda f: f.fail_puts.add(block_name(VID, 1, 2)),
        block_name(VID, 1, 2),
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_block_stops_the_migration_and_the_resumed_run_is_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    windows, inject, broken = FAULTS[fault]
    if windows == "windowed":
        monkeypatch.setattr(encoder, "ROW_BYTES", 4096)
        monkeypatch.setattr(encoder, "WINDOW_BYTES", SMALL_BLOCK // 2)
    blobs = random_blobs(random.Random(21), 300)
    vols = sealed_volume(tmp_path / "vols", VID, blobs)
    cell = make_cell(tmp_path / "cell")
    faulty = FaultyStore(cell.store)
    inject(faulty)

    with pytest.raises(BlockUnreachable, match="injected"):
        _migrate(vols, faulty, cell.keys, cell.work)
    assert len(faulty.failed) == 1, faulty.failed
    nodes = encoder.stripe_nodes(cell.store.nodes(), 1)
    block = int(broken.split(".b")[1].split(".")[0])
    assert not cell.store.exists(nodes[block], broken)  # never committed, whatever followed
    assert _stripes_done(cell.work) <= 1  # no stripe recorded from the failed one on
    with pytest.raises(IndexUnavailable):
        index_file.load(cell.store, VID)
    assert cell.store.clean_temporaries() == 0  # every writer not committed was aborted

    stats = _migrate(vols, cell.store, cell.keys, cell.work)
    assert stats.stripes >= 3 and stats.stripes_resumed <= 1
    assert verify(cell.store, VID).ok
    _read_all(cell.store, cell.keys, blobs)
    again = make_cell(tmp_path / "again", keys=cell.keys)
    _migrate(vols, again.store, again.keys, again.work)
    assert _tree(cell.store.root) == _tree(again.store.root)


class _HoldingStore:
    """A LocalBlockStore whose block 0 holds its first window of every stripe until block 1
    has started on its second one (so the second window was built meanwhile), then checks
    that the window it held did not change under it."""

    def __init__(self, inner: LocalBlockStore) -> None:
        self.inner = inner
        self.next_started: dict[int, threading.Event] = {}
        self.held = 0

    def _started(self, stripe: int) -> threading.Event:
        return self.next_started.setdefault(stripe, threading.Event())

    def open_writer(self, node: str, name: str) -> _HoldingWriter:
        return _HoldingWriter(self, name, self.inner.open_writer(node, name))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


class _HoldingWriter:
    def __init__(self, store: _HoldingStore, name: str, inner: BlockWriter) -> None:
        self._store = store
        self._stripe, self._block = (int(p[1:]) for p in name.split(".")[1:3])
        self._inner = inner
        self._writes = 0

    def write(self, data: Buffer) -> None:
        n = self._writes
        self._writes += 1
        if self._block == 1 and n == 1:
            self._store._started(self._stripe).set()
        if self._block == 0 and n == 0:
            held = bytes(data)
            if not self._store._started(self._stripe).wait(HOLD_S_MAX):
                raise AssertionError("the next window was not built while this one was written")
            if bytes(data) != held:
                raise AssertionError("a window changed while its write held it")
            self._store.held += 1
        self._inner.write(data)

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()


def test_the_next_window_is_built_while_one_is_written_and_never_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder, "ROW_BYTES", 4096)
    monkeypatch.setattr(encoder, "WINDOW_BYTES", SMALL_BLOCK // 2)
    blobs = random_blobs(random.Random(22), 300)
    vols = sealed_volume(tmp_path / "vols", VID, blobs)
    cell = make_cell(tmp_path / "cell")
    holding = _HoldingStore(cell.store)
    stats = _migrate(vols, cast(BlockStore, holding), cell.keys, cell.work)
    assert holding.held == stats.stripes >= 3
    again = make_cell(tmp_path / "again", keys=cell.keys)
    _migrate(vols, again.store, again.keys, again.work)
    assert _tree(cell.store.root) == _tree(again.store.root)


def test_a_storage_node_killed_in_the_middle_then_resumed(
    tmp_path: Path,
    secret_file: Path,
    operator: Credentials,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoder, "ROW_BYTES", 4096)
    monkeypatch.setattr(encoder, "WINDOW_BYTES", 4096)  # two windows per block: uploads
    block_bytes = 8192
    blobs = random_blobs(random.Random(9), 80)
    vols = sealed_volume(tmp_path / "vols", VID, blobs)
    names = [f"n{i:02d}" for i in range(STRIPE_BLOCKS)]
    procs = [NodeProcess(tmp_path, p, names[i::4], secret_file) for i, p in enumerate("abcd")]
    victim = procs[1]
    keys = KeyStore(tmp_path / "keys.db")
    work = tmp_path / "work"
    work.mkdir()
    try:
        for p in procs:
            p.start()
        urls = {n: p.url for n in names for p in procs if n in p.nodes}
        store = HttpBlockStore(urls, operator)

        def kill_at(step: str) -> None:
            if step == "keys 1":  # stripe 0's blocks are on their way, or committed
                victim.kill()

        source = NeedleSource(vols, VID)
        try:
            with pytest.raises(BlockUnreachable):
                Migration(source, store, keys, work, block_bytes=block_bytes, on_step=kill_at).run()
        finally:
            source.close()
        assert _stripes_done(work) <= 1
        victim.start()  # removes its temporaries before it serves
        with pytest.raises(IndexUnavailable):
            index_file.load(store, VID)
        # The other processes were told to abort their uploads: the lock holder finds none.
        assert store.clean_temporaries() == 0

        stats = _migrate(vols, store, keys, work, block_bytes)
        assert stats.stripes >= 2 and stats.stripes_resumed <= 1
        assert verify(store, VID).ok
        _read_all(store, keys, blobs)
        on_nodes: dict[str, bytes] = {}
        for p in procs:
            on_nodes |= _tree(p.blocks)
            assert not list(p.blocks.glob(f"*/*{TEMP_SUFFIX}"))
        reference = LocalBlockStore(tmp_path / "reference", names)
        _migrate(vols, reference, keys, tmp_path / "reference", block_bytes)
        assert on_nodes == _tree(reference.root)
        store.close()
    finally:
        for p in procs:
            p.stop()


def test_an_object_of_one_chunk_is_put_in_one_request(
    tmp_path: Path, secret_file: Path, operator: Credentials
) -> None:
    proc = NodeProcess(tmp_path, "p", ["n00"], secret_file)
    name = block_name(VID, 0, 0)
    try:
        proc.start()
        url = f"{proc.url}/b/n00/{name}"
        header = operator.header(Purpose.BLOCKS)
        first = random.Random(3).randbytes(100_000)
        answer = _raw("PUT", url, header, first)
        assert answer.status == 200 and json.loads(answer.data) == {"size": len(first)}
        assert (proc.blocks / "n00" / name).read_bytes() == first
        second = random.Random(4).randbytes(50_000)  # replaces the object whole
        assert _raw("PUT", url, header, second).status == 200
        assert (proc.blocks / "n00" / name).read_bytes() == second
        assert list((proc.blocks / "n00").iterdir()) == [proc.blocks / "n00" / name]

        bad = _raw("PUT", f"{proc.url}/b/n00/{name}.tmp", header, b"x")
        assert bad.status == 400 and _code(bad) == "bad_name"
        assert _raw("PUT", url, None, b"x").status == 401
        too_long = _raw("PUT", url, header, bytes(UPLOAD_CHUNK_BYTES_MAX + 1))
        assert too_long.status == 413
        assert (proc.blocks / "n00" / name).read_bytes() == second

        # Through the client: one chunk or less is put whole, more goes through an upload.
        store = HttpBlockStore({"n00": proc.url}, operator)
        big = random.Random(5).randbytes(UPLOAD_CHUNK_BYTES_MAX + 12_345)
        store.put("n00", name, [big[:1000], big[1000:]])
        assert store.get("n00", name) == big
        store.put("n00", name, [first[:10], first[10:]])
        assert store.get("n00", name) == first
        assert store.clean_temporaries() == 0
        assert not list((proc.blocks / "n00").glob(f"*{TEMP_SUFFIX}"))
        store.close()
    finally:
        proc.stop()
