"""Metadata backup and restore of a local cluster's SQLite databases.

What is metadata: every SQLite file the services keep under the cluster's root (found by
their header, so a database a later version adds is not missed): the directory's
(`directory/directory.sqlite3`: nodes, logical volumes, replicas, pending deletes and
repairs), the API's and the workers' (`media/media.sqlite3`: media, accounts, posts, the
social graph, messages, stories, search, and the job queues), and the f4 cell's key store
(`f4/keys.sqlite3`: the per-blob keys; without them the f4 copies of photos are noise, and
with them anyone holding the cell's blocks reads the photos: sensitive). A key store
configured outside the root (`[f4] key_store_path` in <root>/f4.toml) is included too.
Volumes are not metadata: replicas and f4 protect them.

Backup copies each database with SQLite's online backup API in one step (one read
transaction: a consistent snapshot, taken while the services write; in WAL mode writers do
not wait for it), turns the copy into a self-contained rollback-journal file, checks it
(`PRAGMA quick_check`), and writes a manifest (files, sizes, sha256, time, pinhole version).
The backup is assembled in a temporary directory beside the target and renamed into place,
so a backup directory either is complete or does not exist.

Restore refuses while any service of the cluster runs, checks every file's size and sha256
before touching anything, writes each database to a temporary file beside its target and
checks it again, and only then swaps them in: per file, the current database is hard-linked
into <root>/restore-previous/<time>/ with its -wal/-shm moved there (a WAL left beside the
restored file would be replayed into it), and the temporary file is renamed over it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
MANIFEST_NAME: Final = "manifest.json"
MANIFEST_FORMAT_VERSION: Final = 1
# Files SQLite keeps beside a database: never databases themselves, never copied.
SIDE_SUFFIXES: Final = ("-wal", "-shm", "-journal")
TMP_SUFFIX: Final = ".restore-tmp"
PREVIOUS_DIR: Final = "restore-previous"
EXTERNAL_DIR: Final = "external"  # in a backup: databases that lived outside the root
BUSY_TIMEOUT_S: Final = 30.0
HASH_CHUNK_BYTES: Final = 1 << 20
# Directories under the root that hold no databases and many large files.
SKIPPED_DIRS: Final = frozenset({"volumes", "logs", PREVIOUS_DIR})
# What each known database is (the manifest's `name`); others are "sqlite".
KNOWN: Final = {
    "directory/directory.sqlite3": "directory",
    "media/media.sqlite3": "metadata",  # media, social, feed, messages, stories, job queues
    "f4/keys.sqlite3": "f4-keys",
}
SENSITIVE: Final = frozenset({"f4-keys"})
KEY_STORE: Final = "f4/keys.sqlite3"


class BackupError(Exception):
    """The backup or restore could not be done; nothing was changed in the cluster."""


class BackupDamaged(BackupError):
    """A backup file does not match its manifest (size or sha256), or the manifest is bad."""


@dataclass(frozen=True, slots=True)
class BackupFile:
    name: str  # directory | metadata | f4-keys | sqlite
    path: str  # where it lives: relative to the root, or absolute (outside the root)
    stored: str  # where it is inside the backup directory
    size_bytes: int
    sha256: str
    sensitive: bool


# -- finding the databases -----------------------------------------------------------------------


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def find_databases(root: Path, *, skip: Path | None = None) -> list[Path]:
    """Every SQLite database file under `root` (absolute paths, sorted), not following
    links, skipping `skip` (a backup being written there) and the volume and log dirs."""
    found = []
    for top, dirs, files in os.walk(root):
        here = Path(top)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED_DIRS and (skip is None or (here / d).resolve() != skip)
        )
        for name in files:
            path = here / name
            if name.endswith(SIDE_SUFFIXES) or name.endswith(TMP_SUFFIX) or path.is_symlink():
                continue
            if is_sqlite(path):
                found.append(path)
    return sorted(found)


def configured_key_store(root: Path) -> Path | None:
    """The f4 key store named in <root>/f4.toml when it lies outside the root."""
    from common.config import ConfigError, load_toml

    try:
        table = load_toml(root / "f4.toml").get("f4", {})
    except (ConfigError, OSError):
        return None
    value = table.get("key_store_path") if isinstance(table, dict) else None
    if not value:
        return None
    path = Path(value).resolve()
    return None if path.is_relative_to(root) else path


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _stored_name(rel: str) -> str:
    return rel if not rel.startswith("/") else f"{EXTERNAL_DIR}{rel}"


# -- copying -------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_database(source: Path, target: Path) -> None:
    """An online copy of `source` into the new file `target`: one backup step (one read
    transaction, a consistent snapshot), made a rollback-journal file, checked, fsynced."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            # The copy stands alone: no WAL beside it (a WAL-mode source marks its header).
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy of {source} fails its check: {check}")
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)
    _fsync(target)


def pinhole_version() -> str:
    try:
        return metadata.version("pinhole")
    except metadata.PackageNotFoundError:
        return "unknown"


def backup(root: Path, out: Path) -> dict[str, Any]:
    """Copies every database of `root` into the new directory `out` (made at once by a
    rename; refused when `out` exists and is not empty). Returns the manifest."""
    root, out = root.resolve(), out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not an empty directory")
    databases = find_databases(root, skip=out)
    external = configured_key_store(root)
    if external is not None and external.exists():
        databases.append(external)
    # The key store last: its snapshot then holds the keys of every volume the directory's
    # and the metadata's snapshots (taken before it) show in f4.
    databases.sort(key=lambda p: (p == external or _relative(p, root) == KEY_STORE, str(p)))
    if not databases:
        raise BackupError(f"no SQLite database under {root}")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    try:
        files = []
        for db in databases:
            rel = _relative(db, root)
            stored = _stored_name(rel)
            target = work / stored
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            copy_database(db, target)
            name = KNOWN.get(rel, "f4-keys" if db == external else "sqlite")
            files.append(
                BackupFile(
                    name=name,
                    path=rel,
                    stored=stored,
                    size_bytes=target.stat().st_size,
                    sha256=sha256_of(target),
                    sensitive=name in SENSITIVE,
                )
            )
        now = time.time()
        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "pinhole_version": pinhole_version(),
            "created_unix_s": now,
            "created": datetime.fromtimestamp(now, UTC).isoformat(),
            "root": str(root),
            "files": [asdict(f) for f in files],
        }
        path = work / MANIFEST_NAME
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(path, 0o600)
        _fsync(path)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.rename(work, out)
        _fsync(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


# -- restoring -----------------------------------------------------------------------------------


def read_manifest(source: Path) -> dict[str, Any]:
    try:
        doc = json.loads((source / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        raise BackupDamaged(f"{source} holds no {MANIFEST_NAME}: not a pinhole backup") from None
    except (OSError, ValueError) as e:
        raise BackupDamaged(f"{source / MANIFEST_NAME} is unreadable: {e}") from None
    if not isinstance(doc, dict) or doc.get("format_version") != MANIFEST_FORMAT_VERSION:
        version = doc.get("format_version") if isinstance(doc, dict) else None
        raise BackupDamaged(f"{source / MANIFEST_NAME}: unknown format version {version}")
    return doc


def _entries(manifest: dict[str, Any]) -> list[BackupFile]:
    try:
        files = [BackupFile(**f) for f in manifest["files"]]
    except (KeyError, TypeError) as e:
        raise BackupDamaged(f"the manifest's file list is malformed: {e}") from None
    for f in files:
        stored = Path(f.stored)
        if stored.is_absolute() or ".." in stored.parts or ".." in Path(f.path).parts:
            raise BackupDamaged(f"the manifest names a path outside the backup: {f.stored}")
    return files


def verify_backup(source: Path) -> list[BackupFile]:
    """Every file of the backup at `source` against its manifest; BackupDamaged otherwise."""
    files = _entries(read_manifest(source))
    for f in files:
        path = source / f.stored
        try:
            size = path.stat().st_size
        except OSError:
            raise BackupDamaged(f"{f.stored} is missing from the backup") from None
        if size != f.size_bytes:
            raise BackupDamaged(f"{f.stored}: {size} bytes, the manifest says {f.size_bytes}")
        if (digest := sha256_of(path)) != f.sha256:
            raise BackupDamaged(f"{f.stored}: sha256 {digest}, the manifest says {f.sha256}")
    return files


def target_of(f: BackupFile, root: Path) -> Path:
    return Path(f.path) if Path(f.path).is_absolute() else root / f.path


def processes_holding(paths: list[Path]) -> list[int]:
    """Pids of the processes (of those this user may inspect) that hold one of `paths` (or
    its -wal/-shm/-journal) open."""
    wanted = {str(p) for p in paths} | {f"{p}{s}" for p in paths for s in SIDE_SUFFIXES}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        pids.append(int(proc.name))
                        break
    return pids


@contextlib.contextmanager
def _temporary_copies(files: list[BackupFile], source: Path, root: Path) -> Iterator[list[Path]]:
    """Each backup file copied beside its target (fsynced, checked again); removed on the way
    out unless renamed into place meanwhile."""
    tmps: list[Path] = []
    try:
        for f in files:
            target = target_of(f, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}{TMP_SUFFIX}"
            tmps.append(tmp)
            shutil.copyfile(source / f.stored, tmp)
            os.chmod(tmp, 0o600)
            _fsync(tmp)
            if sha256_of(tmp) != f.sha256:
                raise BackupError(f"the copy of {f.stored} at {tmp} does not match: disk trouble?")
        yield tmps
    finally:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def restore(source: Path, root: Path) -> dict[str, Any]:
    """Puts the backup at `source` in place under `root` (the cluster must be stopped: the
    caller checks). BackupDamaged when it does not match its manifest: nothing changed."""
    source, root = source.resolve(), root.resolve()
    files = verify_backup(source)
    targets = [target_of(f, root) for f in files]
    if holders := processes_holding(targets):
        raise BackupError(f"processes {holders} hold the databases open: stop them first")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    previous = root / PREVIOUS_DIR / stamp
    kept: list[str] = []
    with _temporary_copies(files, source, root) as tmps:
        # From here on each step replaces one file at once.
        for f, target, tmp in zip(files, targets, tmps, strict=True):
            keep = previous / _stored_name(f.path)
            if target.exists() or any(Path(f"{target}{s}").exists() for s in SIDE_SUFFIXES):
                keep.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    os.link(target, keep)
                for suffix in SIDE_SUFFIXES:
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{target}{suffix}", f"{keep}{suffix}")
                kept.append(f.path)
            os.replace(tmp, target)
            _fsync(target.parent)
    untouched = [_relative(p, root) for p in find_databases(root) if p not in set(targets)]
    return {
        "restored": [asdict(f) for f in files],
        "previous_dir": str(previous) if kept else None,
        "kept": kept,
        "not_in_backup": untouched,
    }
