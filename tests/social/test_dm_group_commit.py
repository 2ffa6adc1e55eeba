"""Group commit of direct messages on SQLite through a real process killed with SIGKILL
while it sends waves of concurrent messages: every send it acknowledged is in SQL with the
sequence number it was given, the thread's sequence has no gap, and no client id made two
messages. Concurrent sends in one process share COMMITs (fewer groups than sends)."""

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
from common.ids import IdGenerator
from social import messages, messages_schema
from social.messages_schema import dm_messages
from tests.feed.conftest import make_user, social_db

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).parents[2]
ACKS_BEFORE_KILL = 100
READ_S_MAX = 30.0


def start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with social_db("sqlite", tmp_path / "db") as database:
        await migrate(database, messages_schema.COMPONENT, messages_schema.MIGRATIONS)
        yield database


async def test_acknowledged_sends_survive_kill_9_mid_group(tmp_path: Path, db: Database) -> None:
    ids = IdGenerator(1)
    ann, bea = await make_user(db, ids), await make_user(db, ids)
    argv = [
        sys.executable, "-m", "tests.social.dm_group_child",
        str(tmp_path / "db" / "meta.sqlite3"), str(ann), str(bea),
    ]  # fmt: skip
    child = start(argv)
    assert child.stdout is not None
    acked: dict[str, tuple[int, int]] = {}
    try:
        while len(acked) < ACKS_BEFORE_KILL:
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), READ_S_MAX)
            assert line, f"the child exited: {child.wait()}"
            _, client_id, message_id, seq = line.split()
            acked[client_id] = (int(message_id), int(seq))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        child.stdout.close()
    m = dm_messages.c
    async with db.snapshot() as conn:
        found = (await conn.execute(sa.select(m.client_id, m.message_id, m.seq))).all()
    stored = {r.client_id: (int(r.message_id), int(r.seq)) for r in found}
    assert len(stored) == len(found)  # one message per client id
    lost = {c: v for c, v in acked.items() if stored.get(c) != v}
    assert not lost  # every acknowledged send, with the seq it was given
    assert sorted(s for _, s in stored.values()) == list(range(1, len(found) + 1))  # no gap


async def test_concurrent_sends_share_commits(db: Database) -> None:
    ids = IdGenerator(1)
    ann, bea = await make_user(db, ids), await make_user(db, ids)
    content = messages.content_of({"kind": "text", "text": "x"})
    first = await messages.send(db, ids, ann, client_id="0", content=content, recipients=[bea])
    sent = await asyncio.gather(
        *(
            messages.send(
                db, ids, who, client_id=str(i), content=content, thread_id=first.thread_id
            )
            for i, who in enumerate([ann, bea] * 10, start=1)
        )
    )
    assert sorted(s.seq for s in sent) == list(range(2, 22))
    stats = db.group_statistics()
    assert stats.units == 21 and stats.groups == 2  # the first alone, then the twenty
