"""A process holding the embedded story store with its journal and a views flusher over a
SQLite file, driven line by line on stdin, for tests/feed/test_story_journal.py to kill:

    view <story> <viewer> <at>   -> "first" or "repeat", once the store returned
    flush                        -> "flushed <rows>", once the batches are in SQL

Run: python -m tests.feed.story_journal_child <journal path> <sqlite path>
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from common.db import open_database
from feed.story_store import MemoryStoryStore
from feed.story_views import ViewCounter
from social.config import SocialConfig

TTL_S = 3600.0


async def main(journal: Path, sqlite: Path) -> None:
    db = await open_database(sqlite)
    store = await MemoryStoryStore.open(journal)
    counter = ViewCounter(db, store, SocialConfig(story_views_flush_batch_max=2))
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[0] == "view":
            view = (int(words[1]), int(words[2]), float(words[3]))
            first = await store.mark_seen(view, story_ttl_s=TTL_S, viewer_ttl_s=TTL_S)
            print("first" if first else "repeat", flush=True)
        elif words[0] == "flush":
            print(f"flushed {await counter.flush_once()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
