"""Story views: cheap, idempotent, and not one SQL write each.

`mark_seen` is one hot-store call (feed/story_store.py): the viewer joins the story's seen
set, and only a first view counts (INCR) and is queued. `ViewFlusher` drains the queue
into SQL in batches of at most [social] story_views_flush_batch_max rows, one write
transaction each (social/story_views.py `record`, which skips pairs already there), every
story_views_flush_interval_ms. The queue is shared (Redis LPOP is atomic), so every API
process may run a flusher. A batch that fails to reach SQL is put back at the head; one that
reached it is reported `settled`, which lets the embedded store shrink its journal
(feed/story_journal.py: there, a view queued when the process dies is replayed at start).

`statistics()` reports views, first views, SQL write transactions and rows: the bench's
sql_writes_per_view is sql_writes / views.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final

from common.db import Database
from feed.story_store import StoryStore
from social import story_views
from social.config import SocialConfig
from social.stories import Story
from social.stories_schema import STORY_LIFETIME_S

log = logging.getLogger("pinhole.stories")

# A viewer's seen set outlives the longest-lived story it can name.
VIEWER_SEEN_TTL_S: Final = STORY_LIFETIME_S + 3600
# A story's seen set and count are kept this long past its expiry (the author's viewer
# list is read from SQL after that).
STORY_KEYS_AFTER_EXPIRY_S: Final = STORY_LIFETIME_S


@dataclass(frozen=True, slots=True)
class ViewStatistics:
    views: int
    first_views: int
    sql_writes: int
    rows_written: int


class ViewCounter:
    """Marks views and drains them to SQL; one per API process."""

    def __init__(self, db: Database, store: StoryStore, config: SocialConfig) -> None:
        self.db = db
        self.store = store
        self.config = config
        self._views = 0
        self._first = 0
        self._writes = 0
        self._rows = 0

    async def mark_seen(self, story: Story, viewer: int, *, now: float | None = None) -> bool:
        """Records the viewer's view of a story they may see (checked by the caller);
        True for a first view."""
        now = time.time() if now is None else now
        self._views += 1
        first = await self.store.mark_seen(
            (story.story_id, viewer, now),
            story_ttl_s=max(1.0, story.expires_unix_s - now + STORY_KEYS_AFTER_EXPIRY_S),
            viewer_ttl_s=VIEWER_SEEN_TTL_S,
        )
        self._first += first
        return first

    async def flush_once(self) -> int:
        """Moves queued views to SQL until the queue is empty; returns the rows sent."""
        sent = 0
        while True:
            batch = await self.store.take_pending(self.config.story_views_flush_batch_max)
            if not batch:
                return sent
            try:
                await story_views.record(self.db, batch)
            except BaseException:
                await self.store.requeue(batch)
                raise
            await self.store.settled(batch)
            self._writes += 1
            self._rows += len(batch)
            sent += len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Flushes every story_views_flush_interval_ms until `stop`, then once more."""
        interval_s = self.config.story_views_flush_interval_ms / 1000
        while not stop.is_set():
            try:
                await self.flush_once()
            except Exception:
                log.exception("story views flush failed; retried next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
        with contextlib.suppress(Exception):
            await self.flush_once()

    def statistics(self) -> ViewStatistics:
        return ViewStatistics(self._views, self._first, self._writes, self._rows)
