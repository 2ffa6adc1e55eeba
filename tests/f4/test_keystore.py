"""The key store deletes for real: deleted keys' bytes are in none of its files afterwards.

The same measurement on LMDB (delete half, then its nearest purge step, a sync) finds
deleted keys still on disk: freed pages are not zeroed. That is why keys live in SQLite."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import lmdb
import pytest

from f4.blob import BlobId, BlobKey
from f4.errors import KeyStoreBusy
from f4.keystore import KeyStore

KEYS = 400


def _findable(files: list[Path], secrets: list[bytes]) -> int:
    blobs = b"".join(f.read_bytes() for f in files)
    return sum(1 for s in secrets if s in blobs)


def _keys() -> list[tuple[BlobId, BlobKey]]:
    return [(BlobId(1, i, 1), BlobKey.new()) for i in range(KEYS)]


def test_deleted_keys_are_gone_from_every_sqlite_file(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    items = _keys()
    store.put_many(items)
    reader = KeyStore(tmp_path / "keys.db")  # another connection, as a read path would hold
    assert reader.get(items[0][0]) == items[0][1]
    deleted = items[::2]
    assert store.delete(b for b, _ in deleted) == len(deleted)
    assert reader.get(deleted[0][0]) is None  # absent at once, for every reader
    assert reader.get(items[1][0]) == items[1][1]
    files = store.files()
    assert any(f.name == "keys.db" for f in files)
    assert _findable(files, [k.secret for _, k in deleted]) == 0
    assert _findable(files, [k.nonce + k.secret for _, k in deleted]) == 0
    # The kept keys are there in full, so the search is able to find a key.
    assert _findable(files, [k.secret for _, k in items[1::2]]) == len(items[1::2])
    store.close()
    reader.close()


def test_put_never_replaces_a_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    blob, first = BlobId(2, 3, 4), BlobKey.new()
    store.put_many([(blob, first)])
    store.put_many([(blob, BlobKey.new())])
    assert store.get(blob) == first
    assert store.count() == 1
    store.close()


def test_lmdb_leaves_deleted_keys_on_disk(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "keys.lmdb"), map_size=64 << 20, sync=True)
    items = _keys()
    with env.begin(write=True) as txn:
        for b, k in items:
            txn.put(b.packed(), k.secret + k.nonce)
    with env.begin(write=True) as txn:
        for b, _ in items[::2]:
            txn.delete(b.packed())
    env.sync(True)
    env.close()
    files = [tmp_path / "keys.lmdb" / n for n in os.listdir(tmp_path / "keys.lmdb")]
    found = _findable(files, [k.secret for _, k in items[::2]])
    assert found > 0, "LMDB now zeroes freed pages: revisit the key store choice"


def test_purge_blocked_by_a_reader_is_reported_and_retried(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db", busy_timeout_s=0.1)
    items = _keys()[:50]
    store.put_many(items)
    reader = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM blob_keys").fetchone()  # pins a WAL snapshot
    with pytest.raises(KeyStoreBusy):
        store.delete([items[0][0]])
    assert store.get(items[0][0]) is None  # the delete itself is committed
    reader.execute("COMMIT")
    store.purge()
    assert _findable(store.files(), [items[0][1].secret]) == 0
    reader.close()
    store.close()


def test_a_new_key_store_opens_while_another_connection_writes(tmp_path: Path) -> None:
    """Processes of one cell may open a new key store at once. Another connection in a
    write transaction makes turning on WAL fail at once ("locked": SQLite does not wait
    where waiting could deadlock); the opening tries again and succeeds once that
    transaction ends, within its busy timeout, and the store works."""
    path = tmp_path / "keys.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE other (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other VALUES (1)")
    commit = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    commit.start()
    try:
        started = time.monotonic()
        store = KeyStore(path, busy_timeout_s=5.0)
        assert time.monotonic() - started >= 0.25  # it waited for the writer
        items = _keys()[:2]
        store.put_many(items)
        assert store.get_many([b for b, _ in items]) == dict(items)
        store.close()
    finally:
        commit.join()
        other.close()


def test_a_key_store_locked_past_its_busy_timeout_fails_to_open(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE other (x)")
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            KeyStore(path, busy_timeout_s=0.2)
    finally:
        other.execute("ROLLBACK")
        other.close()
