"""The key store: one (secret, nonce) per blob, in SQLite, deleted for real on disk.

Deleting a blob's key is the blob's delete: once `delete` returns, reads answer absent, and
the key's bytes are in none of the store's files. SQLite gives that with
`PRAGMA secure_delete=ON` (freed cells and pages are overwritten with zeros) plus the purge
step, `PRAGMA wal_checkpoint(TRUNCATE)`, which copies the zeroed pages into the database and
cuts the WAL (which still held the key's page images) to zero bytes. `delete` runs the purge
before it returns. LMDB was measured and rejected: it does not zero freed pages
(docs/formats/f4.md, ARCHITECTURE.md).

Layout: one WITHOUT ROWID table, blob_keys(blob_id BLOB(16) PRIMARY KEY, secret BLOB(32),
nonce BLOB(12)); blob_id = volume u32 | key u64 | alt key u32, little-endian.

Deletes that arrive while a volume migrates are also written down as tombstones
(volume, key, alt key or -1 for every variant): a delete can reach the cell before the
migration wrote the blob's key, and the migration applies the tombstones once its keys
and index exist (f4.handover). A tombstone holds no key material.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from f4.blob import KEY_BYTES, NONCE_BYTES, BlobId, BlobKey
from f4.errors import KeyStoreBusy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_keys (
    blob_id BLOB PRIMARY KEY,
    secret BLOB NOT NULL CHECK (length(secret) = 32),
    nonce BLOB NOT NULL CHECK (length(nonce) = 12)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tombstones (
    volume INTEGER NOT NULL,
    key INTEGER NOT NULL,  -- the u64 key as a signed 64-bit integer (SQLite's own)
    alt_key INTEGER NOT NULL,  -- -1: every variant
    PRIMARY KEY (volume, key, alt_key)
) WITHOUT ROWID;
"""
EVERY_VARIANT: Final = -1
# Keys read by one `IN (...)` query (under SQLite's 999 parameters): a migration's stripe
# or a name node's batch of reads is a few queries, not one per blob.
LOOKUP_BATCH_MAX: Final = 500
# Between tries of a new connection's set-up that found the key store locked.
SET_UP_RETRY_S: Final = 0.02


def _signed(key: int) -> int:
    return key - (1 << 64) if key >= 1 << 63 else key


def _unsigned(key: int) -> int:
    return key + (1 << 64) if key < 0 else key


class KeyStore:
    """One connection, shared by threads under a lock."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        """`busy_timeout_s`: how long a write or the purge waits for other connections."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        # Processes of one cell (the name node, the watcher, a migration) may open a new
        # key store at once. Turning on WAL and creating the schema can then meet another
        # connection's lock where SQLite answers "locked" at once instead of waiting (the
        # busy handler is not asked when waiting could deadlock), so the set-up, which is
        # idempotent, is tried again until `busy_timeout_s` has passed.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                self._set_up()
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    self._db.close()
                    raise
                time.sleep(SET_UP_RETRY_S)
        if self._db.execute("PRAGMA secure_delete").fetchone()[0] != 1:
            raise RuntimeError("this SQLite cannot secure_delete")

    def _set_up(self) -> None:
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def files(self) -> list[Path]:
        """Every file the store may keep bytes in (database, WAL, shared memory, journal)."""
        names = [self.path.name + suffix for suffix in ("", "-wal", "-shm", "-journal")]
        return [self.path.parent / n for n in names if (self.path.parent / n).exists()]

    def put_many(self, items: Iterable[tuple[BlobId, BlobKey]]) -> None:
        """Stores keys durably in one transaction. An existing key is never replaced."""
        rows = [(b.packed(), k.secret, k.nonce) for b, k in items]
        with self._lock, self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO blob_keys VALUES (?, ?, ?)", rows)

    def get(self, blob: BlobId) -> BlobKey | None:
        return self.get_many((blob,)).get(blob)

    def get_many(self, blobs: Iterable[BlobId]) -> dict[BlobId, BlobKey]:
        """The keys of those `blobs` that have one, read under one hold of the lock."""
        by_id = {b.packed(): b for b in blobs}
        ids = list(by_id)
        out: dict[BlobId, BlobKey] = {}
        with self._lock:
            for at in range(0, len(ids), LOOKUP_BATCH_MAX):
                batch = ids[at : at + LOOKUP_BATCH_MAX]
                rows = self._db.execute(
                    "SELECT blob_id, secret, nonce FROM blob_keys WHERE blob_id IN "
                    f"({','.join('?' * len(batch))})",
                    batch,
                ).fetchall()
                for blob_id, secret, nonce in rows:
                    assert len(secret) == KEY_BYTES and len(nonce) == NONCE_BYTES
                    out[by_id[bytes(blob_id)]] = BlobKey(bytes(secret), bytes(nonce))
        return out

    def delete(self, blobs: Iterable[BlobId]) -> int:
        """Deletes keys and purges; returns how many existed. On KeyStoreBusy the delete is
        committed (the blobs read absent) and `purge` must be retried."""
        ids = [(b.packed(),) for b in blobs]
        with self._lock, self._transaction():
            deleted = self._db.executemany("DELETE FROM blob_keys WHERE blob_id = ?", ids).rowcount
        self.purge()
        return deleted

    def tombstone(self, volume: int, key: int, alt_key: int | None) -> None:
        """Records a delete of the blob (alt_key None: every variant of the key), durably."""
        alt = EVERY_VARIANT if alt_key is None else alt_key
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO tombstones VALUES (?, ?, ?)", (volume, _signed(key), alt)
            )

    def tombstones(self, volume: int) -> list[tuple[int, int | None]]:
        """The volume's recorded deletes: (key, alt key or None for every variant)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, alt_key FROM tombstones WHERE volume = ? ORDER BY key, alt_key",
                (volume,),
            ).fetchall()
        return [(_unsigned(k), None if a == EVERY_VARIANT else a) for k, a in rows]

    def tombstoned(self, volume: int, key: int, alt_key: int) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM tombstones WHERE volume = ? AND key = ? AND alt_key IN (?, ?)",
                (volume, _signed(key), alt_key, EVERY_VARIANT),
            ).fetchone()
        return row is not None

    def purge(self) -> None:
        """The purge step: checkpoint the WAL into the database and truncate it."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise KeyStoreBusy("a reader held the WAL; the purge did not complete")

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM blob_keys").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
