"""A process sending direct messages in waves of concurrent sends (group commit on a
SQLite file), printing each acknowledged send, for tests/social/test_dm_group_commit.py to
kill with SIGKILL mid-wave:

    ack <client_id> <message_id> <seq>   once messages.send returned (committed)

Run: python -m tests.social.dm_group_child <sqlite path> <sender id> <recipient id>
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

from common.db import open_database
from common.ids import IdGenerator
from social import messages

WAVE = 16


async def main(sqlite: Path, sender: int, recipient: int) -> None:
    db = await open_database(sqlite)
    ids = IdGenerator(7)
    content = messages.content_of({"kind": "text", "text": "x"})
    first = await messages.send(
        db, ids, sender, client_id="c0", content=content, recipients=[recipient]
    )
    print(f"ack c0 {first.message_id} {first.seq}", flush=True)
    counter = itertools.count(1)

    async def one(client_id: str) -> None:
        sent = await messages.send(
            db, ids, sender, client_id=client_id, content=content, thread_id=first.thread_id
        )
        print(f"ack {client_id} {sent.message_id} {sent.seq}", flush=True)

    while True:  # until killed
        await asyncio.gather(*(one(f"c{next(counter)}") for _ in range(WAVE)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
