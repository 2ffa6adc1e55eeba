"""The embedded story store's journal (feed/story_journal.py): first views acknowledged by a
process killed with SIGKILL before its flusher wrote them reach SQL after a restart, exactly
once; views already in SQL when the process died (killed between the batch's commit and
`settled`) are replayed and add nothing; the file empties once everything is settled and
shrinks when large; a torn last record is skipped, a bad record elsewhere refuses to open;
a second process cannot open a journal in use."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from common.db import Database, migrate
from feed.story_journal import (
    RECORD_BYTES_MAX,
    StoryJournalCorrupt,
    ViewJournal,
    encode,
)
from feed.story_store import MemoryStoryStore
from feed.story_views import ViewCounter
from social import stories_schema
from social.config import SocialConfig
from social.stories_schema import story_views
from tests.feed.conftest import social_db

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).parents[2]
TTL = {"story_ttl_s": 3600.0, "viewer_ttl_s": 3600.0}
REPLY_S_MAX = 20.0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with social_db("sqlite", tmp_path / "db") as database:
        await migrate(database, stories_schema.COMPONENT, stories_schema.MIGRATIONS)
        yield database


async def rows(db: Database) -> set[tuple[int, int]]:
    v = story_views.c
    async with db.snapshot() as conn:
        found = await conn.execute(sa.select(v.story_id, v.viewer_id))
        return {(int(r[0]), int(r[1])) for r in found}


class Child:
    """tests/feed/story_journal_child.py in its own process."""

    def __init__(self, journal: Path, sqlite: Path) -> None:
        argv = [sys.executable, "-m", "tests.feed.story_journal_child", str(journal), str(sqlite)]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    async def reply(self) -> str:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), REPLY_S_MAX)
        assert line, f"the child exited: {self.process.wait()}"
        return line.strip()

    async def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return await self.reply()

    def kill_9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        returncode = self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        assert returncode == -signal.SIGKILL


async def test_views_acknowledged_before_kill_9_reach_sql_after_restart(
    tmp_path: Path, db: Database
) -> None:
    journal = tmp_path / "api" / "story_views.journal"
    child = Child(journal, tmp_path / "db" / "meta.sqlite3")
    try:
        assert await child.reply() == "ready"
        for story, viewer in ((1, 10), (1, 11), (2, 10)):
            assert await child.ask(f"view {story} {viewer} 5.0") == "first"
        assert await child.ask("flush") == "flushed 3"
        assert await asyncio.to_thread(journal.read_bytes) == b""  # all settled: emptied
        for story, viewer in ((1, 12), (2, 11), (3, 12)):
            assert await child.ask(f"view {story} {viewer} 6.0") == "first"
        assert await child.ask("view 1 12 7.0") == "repeat"
    finally:
        child.kill_9()
    assert await rows(db) == {(1, 10), (1, 11), (2, 10)}  # the last three never reached SQL
    # The next process on the same journal: the three acknowledged views are queued again,
    # once each, and the flusher writes them.
    store = await MemoryStoryStore.open(journal)
    try:
        assert await store.pending() == 3
        counter = ViewCounter(db, store, SocialConfig(story_views_flush_batch_max=2))
        assert await counter.flush_once() == 3
        assert await rows(db) == {(1, 10), (1, 11), (2, 10), (1, 12), (2, 11), (3, 12)}
        assert counter.statistics().sql_writes == 2  # batches of two
        assert await asyncio.to_thread(journal.read_bytes) == b""
    finally:
        await store.close()


async def test_a_replay_of_views_already_in_sql_adds_nothing(tmp_path: Path, db: Database) -> None:
    # The state of a process killed after its batch committed and before `settled`: the
    # views are both in SQL and in the journal (with a repeat of one, and a torn record).
    journal = tmp_path / "story_views.journal"
    first = MemoryStoryStore()
    for view in ((7, 1, 1.0), (7, 2, 2.0)):
        await first.mark_seen(view, **TTL)
    await ViewCounter(db, first, SocialConfig()).flush_once()
    data = encode((7, 1, 1.0)) + encode((7, 2, 2.0)) + encode((7, 1, 3.0)) + b"8:3:4"
    await asyncio.to_thread(journal.write_bytes, data)
    store = await MemoryStoryStore.open(journal)
    try:
        assert await store.take_pending(10) == [(7, 1, 1.0), (7, 2, 2.0)]
        await store.requeue([(7, 1, 1.0), (7, 2, 2.0)])
        counter = ViewCounter(db, store, SocialConfig())
        assert await counter.flush_once() == 2
        assert await rows(db) == {(7, 1), (7, 2)}
        # The torn tail was cut when the journal opened; new records follow whole ones.
        await store.mark_seen((9, 9, 9.0), **TTL)
        assert await asyncio.to_thread(journal.read_bytes) == encode((9, 9, 9.0))
    finally:
        await store.close()


async def test_the_journal_shrinks_to_the_views_still_waiting(tmp_path: Path) -> None:
    journal = tmp_path / "story_views.journal"
    store = await MemoryStoryStore.open(journal)
    try:
        for viewer in range(40):
            await store.mark_seen((1, viewer, 1.0), **TTL)
        taken = await store.take_pending(30)
        await store.settled(taken[:29])  # one taken, ten queued: still waiting
        assert await store.pending() == 10
        kept = await asyncio.to_thread(journal.read_bytes)
        assert kept.count(b"\n") == 40  # far below JOURNAL_BYTES_MAX: not rewritten
        await store.settled(taken[29:])
        assert await store.take_pending(10) == [(1, v, 1.0) for v in range(30, 40)]
        await store.settled([(1, v, 1.0) for v in range(30, 40)])
        assert await asyncio.to_thread(journal.read_bytes) == b""
    finally:
        await store.close()
    # A rewrite keeps exactly the views not settled, taken ones first.
    opened, _ = await asyncio.to_thread(ViewJournal.open, tmp_path / "big.journal")
    try:
        opened.size = 10**9  # as if it had grown past JOURNAL_BYTES_MAX
        assert opened.wants_rewrite(3) and not opened.wants_rewrite(10**9 // RECORD_BYTES_MAX)
        await opened.rewrite([(2, 1, 1.0), (2, 2, 2.0)])
        assert opened.size == len(encode((2, 1, 1.0)) + encode((2, 2, 2.0)))
        await opened.append((2, 3, 3.0))
    finally:
        await opened.close()
    got = await asyncio.to_thread((tmp_path / "big.journal").read_bytes)
    assert got == encode((2, 1, 1.0)) + encode((2, 2, 2.0)) + encode((2, 3, 3.0))


async def test_bad_records_refuse_to_open_and_one_process_per_journal(tmp_path: Path) -> None:
    bad = tmp_path / "bad.journal"
    await asyncio.to_thread(bad.write_bytes, encode((1, 1, 1.0)) + b"1:x:2.0\n" + b"3:3")
    with pytest.raises(StoryJournalCorrupt, match=r"bad\.journal:2: not a view record"):
        await MemoryStoryStore.open(bad)
    assert await asyncio.to_thread(bad.read_bytes) == encode((1, 1, 1.0)) + b"1:x:2.0\n3:3"
    held = tmp_path / "held.journal"
    store = await MemoryStoryStore.open(held)
    try:
        code = (
            "import sys; from feed.story_journal import ViewJournal, StoryJournalBusy\n"
            "try:\n    ViewJournal.open(__import__('pathlib').Path(sys.argv[1]))\n"
            "except StoryJournalBusy as e:\n    print(e); sys.exit(3)\n"
        )
        other = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", code, str(held)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=REPLY_S_MAX,
        )
        assert other.returncode == 3 and "held by another process" in other.stdout, other
    finally:
        await store.close()
