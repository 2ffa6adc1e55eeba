"""What a user uploaded within the last sliding day, counted from the media table: the API
refuses an upload past [api] uploads_per_day_max or upload_bytes_per_day_max (429).

Every media row counts, whatever became of it (processing, ready, failed, expired or
deleted): the quota bounds what a user makes the cluster store and process, and deleting
an upload must not hand the quota back. One indexed read: the rows of one owner from an id
made shortly before the window (ids are time-ordered, `media_owner` is (owner_id,
media_id)), filtered on the exact creation time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from common import ids
from common.db import Database
from transformer.schema import media

WINDOW_S: Final = 86400.0
# A media's id is made before its original is written and its created_unix_s after, so
# the id bound reaches this far before the window to miss no row (slow writes included).
ID_MARGIN_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class Usage:
    """Uploads of one user created in (now - WINDOW_S, now]."""

    count: int
    size_bytes: int
    # When the oldest of them was created (None: no upload in the window); it leaves the
    # window WINDOW_S later, the earliest moment the usage drops.
    oldest_unix_s: float | None

    def reset_s(self, now: float) -> float:
        """Seconds until the oldest upload leaves the window (0 when there is none)."""
        if self.oldest_unix_s is None:
            return 0.0
        return max(0.0, self.oldest_unix_s + WINDOW_S - now)


async def usage(db: Database, owner_id: int, *, now: float) -> Usage:
    """The owner's uploads within the sliding day ending at `now` (Unix seconds)."""
    since = now - WINDOW_S
    since_ms = int(since * 1000) - ids.EPOCH_UNIX_MS - ID_MARGIN_MS
    first_id = ids.compose(max(0, since_ms), 0, 0)
    query = sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(media.c.size_bytes), 0),
        sa.func.min(media.c.created_unix_s),
    ).where(
        media.c.owner_id == owner_id,
        media.c.media_id >= first_id,
        media.c.created_unix_s > since,
    )
    async with db.snapshot() as conn:
        count, size_bytes, oldest = (await conn.execute(query)).one()
    return Usage(int(count), int(size_bytes), None if oldest is None else float(oldest))
