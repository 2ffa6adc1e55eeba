"""The embedded story store's journal: the first views not yet in SQL, on disk, so that the
death of the process (kill -9, a crash, the OOM killer) loses none of them.

With Redis the queue of first views lives in the server (feed/story_store.py, `sq`); the
embedded store (MemoryStoryStore) held it in the process's memory only, and a view
acknowledged to its viewer was gone with the process if the flusher (feed/story_views.py)
had not yet written it. Now `mark_seen` returns only after the view's record is written to
this file, and the store replays the file when it opens: every view still in the file goes
back on the queue. SQL skips pairs it already has, so a view replayed after it reached SQL
(the process died between the batch's commit and `settled`) adds nothing.

Layout: a text file of records, one line each, in the order the views were taken:

    <story id> ":" <viewer id> ":" <viewed_unix_s as Python repr> "\\n"

the encoding of the Redis queue's members. A record is written with one write() on a file
opened O_APPEND; a process killed during that write can leave the last line without its
newline, so a final line without one is a torn write and skipped (nothing acknowledged it).
Any other line that does not decode is corruption (StoryJournalCorrupt names the file and
line; the API refuses to start rather than drop views silently).

Durability: the record is in the kernel's page cache when `append` returns, not fsynced.
That survives the process's death, not the machine's (power loss, a kernel crash), as
Redis's default `appendfsync everysec` does not either; an fsync per view would cost what a
SQL write per view costs (ARCHITECTURE.md invariant 69). A rewrite is fsynced and renamed
into place, then the directory fsynced, so a crash during it leaves the old file or the new.

Size: the file is emptied when nothing is waiting for SQL (every view taken has been
settled), and rewritten with only the views still waiting when it has grown past
JOURNAL_BYTES_MAX and those hold less than half of it (so a long SQL outage does not make
every batch rewrite the file).

One process per file: `open` takes an exclusive flock and fails at once (StoryJournalBusy)
if another process holds it (two embedded API processes pointed at one data dir).

All file I/O runs on the journal's one thread, never on the event loop; appends and
rewrites are queued to it in call order, so a rewrite decided at a moment sees exactly the
appends submitted before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

View = tuple[int, int, float]  # (story_id, viewer_id, viewed_unix_s)

JOURNAL_NAME: Final = "story_views.journal"
JOURNAL_BYTES_MAX: Final = 64 * 1024 * 1024
# Ids are at most 20 digits (u64), the time a float's repr (at most 24 characters), plus
# two separators and the newline.
RECORD_BYTES_MAX: Final = 20 + 1 + 20 + 1 + 24 + 1
# One thread: records are written in the order they were submitted.
JOURNAL_THREADS: Final = 1


class StoryJournalError(Exception):
    """The journal cannot be used."""


class StoryJournalCorrupt(StoryJournalError):
    """A record that is not a torn last line does not decode: the bytes are bad."""


class StoryJournalBusy(StoryJournalError):
    """Another process holds the journal."""


def encode(view: View) -> bytes:
    return f"{view[0]}:{view[1]}:{view[2]!r}\n".encode()


def decode_line(line: bytes) -> View:
    """One record without its newline; ValueError when it does not decode."""
    story, viewer, at = line.decode("ascii").split(":")
    return int(story), int(viewer), float(at)


def read_records(data: bytes, *, path: Path) -> list[View]:
    """The views of a journal's bytes, in order; a last line without its newline (a torn
    write) is skipped."""
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline is empty or torn
    out: list[View] = []
    for number, line in enumerate(complete, start=1):
        try:
            out.append(decode_line(line))
        except (ValueError, UnicodeDecodeError):
            raise StoryJournalCorrupt(
                f"{path}:{number}: not a view record: {line[:80]!r}"
            ) from None
    return out


class ViewJournal:
    """An open journal: `append` before acknowledging a first view, `rewrite` to shrink."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self.size = size  # bytes, as of the last submitted write (appends and rewrites)
        self._executor = ThreadPoolExecutor(JOURNAL_THREADS, thread_name_prefix="storyjournal")

    @classmethod
    def open(cls, path: Path) -> tuple[ViewJournal, list[View]]:
        """Opens (creating) the journal, locks it for this process, and returns it with the
        views it holds, in order. Blocking: call it off the event loop."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoryJournalBusy(f"{path}: held by another process") from None
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            views = read_records(data, path=path)
            if data and not data.endswith(b"\n"):  # drop the torn tail before appending
                os.ftruncate(fd, data.rfind(b"\n") + 1)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, os.fstat(fd).st_size), views

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    async def append(self, view: View) -> None:
        """Returns once the view's record is written (in the page cache)."""
        record = encode(view)
        self.size += len(record)
        loop = asyncio.get_running_loop()
        # Shielded: a caller cancelled mid-write does not leave the record half-submitted.
        await asyncio.shield(loop.run_in_executor(self._executor, self._write, record))

    def _replace(self, data: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        old, self._fd = self._fd, fd
        os.close(old)

    def _truncate(self) -> None:
        os.ftruncate(self._fd, 0)

    async def rewrite(self, waiting: Sequence[View]) -> None:
        """Replaces the journal by the records of `waiting` (the views not yet settled in
        SQL, as the store holds them now): queued after every append submitted before."""
        loop = asyncio.get_running_loop()
        if not waiting:
            self.size = 0
            await asyncio.shield(loop.run_in_executor(self._executor, self._truncate))
            return
        data = b"".join(encode(v) for v in waiting)
        self.size = len(data)
        await asyncio.shield(loop.run_in_executor(self._executor, self._replace, data))

    def wants_rewrite(self, waiting: int) -> bool:
        """True when `waiting` views still unsettled would make the file much smaller."""
        return self.size >= JOURNAL_BYTES_MAX and waiting * RECORD_BYTES_MAX < self.size // 2

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            await loop.run_in_executor(self._executor, os.close, self._fd)
        self._executor.shutdown(wait=False)
