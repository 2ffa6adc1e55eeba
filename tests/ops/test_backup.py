"""`pinhole backup` and `pinhole restore` on SQLite files of a root without a cluster: what is
found, a WAL's committed rows in the copy, a stale WAL never replayed into a restored file,
and the PostgreSQL guidance (tests/ops/test_housekeeping.py restores into a running cluster)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ops import backup as bk
from tests.up_cluster import pinhole


def _db(path: Path, rows: list[str]) -> sqlite3.Connection:
    """A WAL-mode database with table t(v); the connection stays open (its rows sit in the
    WAL until a checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
    return conn


def _rows(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY rowid")]
    finally:
        conn.close()


def test_backup_finds_every_database_and_copies_what_the_wal_holds(tmp_path: Path) -> None:
    root = tmp_path / "root"
    held = _db(root / "media" / "media.sqlite3", ["a", "b"])
    _db(root / "directory" / "directory.sqlite3", ["d"]).close()
    _db(root / "f4" / "keys.sqlite3", ["k"]).close()
    (root / "store-1" / "volumes").mkdir(parents=True)
    # Not databases: a volume directory is not searched, other files are told by header.
    (root / "store-1" / "volumes" / "v1.sqlite3").write_bytes(b"SQLite format 3\x00" * 4)
    (root / "cluster.json").write_text("{}")
    assert (root / "media" / "media.sqlite3-wal").stat().st_size > 0
    try:
        manifest = bk.backup(root, tmp_path / "out")
    finally:
        held.close()
    paths = [f["path"] for f in manifest["files"]]
    # The key store last.
    assert paths == ["directory/directory.sqlite3", "media/media.sqlite3", "f4/keys.sqlite3"]
    names = {f["path"]: (f["name"], f["sensitive"]) for f in manifest["files"]}
    assert names["f4/keys.sqlite3"] == ("f4-keys", True)
    assert names["media/media.sqlite3"] == ("metadata", False)
    out = tmp_path / "out"
    assert _rows(out / "media" / "media.sqlite3") == ["a", "b"]
    assert not (out / "media" / "media.sqlite3-wal").exists()
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    assert oct((out / "f4" / "keys.sqlite3").stat().st_mode & 0o777) == "0o600"
    assert bk.verify_backup(out) and not list(tmp_path.glob(".out.partial-*"))


def test_restore_moves_a_stale_wal_away(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _db(root / "media" / "media.sqlite3", ["old"]).close()
    bk.backup(root, tmp_path / "b")
    # Later rows, left in a WAL (as after a kill -9): replaying it into the restored file
    # would bring them back on top of the backup.
    held = _db(root / "media" / "media.sqlite3", ["later"])
    wal = (root / "media" / "media.sqlite3-wal").read_bytes()
    held.close()
    (root / "media" / "media.sqlite3-wal").write_bytes(wal)
    result = bk.restore(tmp_path / "b", root)
    assert _rows(root / "media" / "media.sqlite3") == ["old"]
    previous = Path(result["previous_dir"])
    assert (previous / "media" / "media.sqlite3-wal").read_bytes() == wal
    assert result["kept"] == ["media/media.sqlite3"]


def test_postgresql_databases_get_the_pg_dump_lines(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _db(root / "f4" / "keys.sqlite3", ["k"]).close()
    config = tmp_path / "pinhole.toml"
    config.write_text(
        '[media]\ndatabase_url = "postgresql+asyncpg://pinhole:s3cret@db-1:5433/meta"\n'
        '[directory]\ndatabase_url = "postgresql+asyncpg://pinhole@db-1/dir"\n'
        'database_schema = "directory"\n'
    )
    p = pinhole("--config", config, "backup", "--data", root, "--out", tmp_path / "b", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "f4/keys.sqlite3" in p.stdout  # the SQLite part is done all the same
    err = p.stderr.splitlines()
    assert err[0].startswith("pinhole: in PostgreSQL, not backed up by this command: ")
    assert err[1] == (
        f"  pg_dump --format=custom --schema=directory --file={tmp_path / 'b'}/directory.dump "
        "'postgresql://pinhole@db-1/dir'"
    )
    assert err[2] == (
        f"  pg_dump --format=custom --file={tmp_path / 'b'}/media.dump "
        "'postgresql://pinhole@db-1:5433/meta'"
    )
    assert "s3cret" not in p.stderr + p.stdout
    p = pinhole(
        "--config", config, "backup", "--data", root, "--out", tmp_path / "c",
        "--without-postgresql", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["postgresql_not_included"] == ["directory", "media"]
    p = pinhole(
        "--config", config, "restore", "--data", root, "--from", tmp_path / "c", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    assert "pg_restore --clean --if-exists --single-transaction --schema=directory " in p.stderr


def test_a_directory_that_is_no_backup_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    p = pinhole("restore", "--data", tmp_path / "root", "--from", tmp_path / "empty", cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr == (
        f"pinhole: the backup is damaged, nothing restored: {tmp_path / 'empty'} holds no "
        "manifest.json: not a pinhole backup\n"
    )
