"""One file per photo under two levels of hashed directories, as a web server's docroot.

An object named `name` lives at `root/<h[0:2]>/<h[2:4]>/<name>` where `h` is the hex MD5 of
the name (a spreading hash, not a security one), so at most 65,536 leaf directories hold
the files, which is how sites kept photos on NFS before Haystack. Its URL path is
`/<h[0:2]>/<h[2:4]>/<name>`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
"""Object names allowed: safe as both a file name and a URL path segment, no quoting."""
BATCH_OBJECTS = 256


def name_hash(name: str) -> str:
    """The hex MD5 of `name` (UTF-8) that picks its directories."""
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


def check_name(name: str) -> None:
    """Raise ValueError unless `name` is a plain file name usable unquoted in a URL."""
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"object name must match {NAME_PATTERN.pattern}: {name!r}")


def url_path(name: str) -> str:
    """The URL path ("/ab/cd/name") of object `name` relative to the tree's root."""
    digest = name_hash(name)
    return f"/{digest[0:2]}/{digest[2:4]}/{name}"


def file_path(root: Path, name: str) -> Path:
    """Where object `name` is stored under `root`."""
    return root / url_path(name)[1:]


def write_tree(root: Path, objects: Iterable[tuple[str, bytes]], *, threads: int = 4) -> list[str]:
    """Write each (name, data) as one file under `root`; the URL paths, in input order.

    File creation is bound by the file system's metadata updates, not by Python, so
    batches of objects are written by `threads` threads (1: all in the calling thread);
    at most 2 * `threads` batches are held in memory. Files are written with plain
    os.open/os.write and no fsync: callers that need them on disk call `os.sync()`.
    An existing object of the same name is overwritten.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    root.mkdir(parents=True, exist_ok=True)
    writer = TreeWriter(os.fspath(root))
    paths: list[str] = []
    if threads == 1:
        for batch in batched(objects, BATCH_OBJECTS):
            paths += writer.write_batch(batch)
        return paths
    with ThreadPoolExecutor(threads, thread_name_prefix="write_tree") as pool:
        pending: deque[Future[list[str]]] = deque()
        for batch in batched(objects, BATCH_OBJECTS):
            pending.append(pool.submit(writer.write_batch, batch))
            if len(pending) >= 2 * threads:
                paths += pending.popleft().result()
        while pending:
            paths += pending.popleft().result()
    return paths


def batched(objects: Iterable[tuple[str, bytes]], size: int) -> Iterator[list[tuple[str, bytes]]]:
    """`objects` in lists of `size` (the last one shorter)."""
    iterator = iter(objects)
    while batch := list(islice(iterator, size)):
        yield batch


class TreeWriter:
    """Writes objects under one root, creating each hashed directory once."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.made_dirs: set[str] = set()

    def write_batch(self, batch: list[tuple[str, bytes]]) -> list[str]:
        """Write every (name, data) of `batch`; their URL paths."""
        paths = []
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        for name, data in batch:
            check_name(name)
            path = url_path(name)
            directory = self.root + path[:6]  # root + "/ab/cd"
            if directory not in self.made_dirs:
                os.makedirs(directory, exist_ok=True)
                self.made_dirs.add(directory)
            fd = os.open(self.root + path, flags, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            paths.append(path)
        return paths
