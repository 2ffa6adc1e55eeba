"""Story viewer lists in SQL: written in batches (feed/story_views.py drains the hot
store's pending views into `record`), read by the story's author (`viewers`), and the
viewer's story views counted for the tray's affinity.

A batch is one write transaction whatever its size; a (story, viewer) pair already recorded
is skipped, so a batch replayed after a crash changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from common.db import Database
from social.stories_schema import story_views

LOCK: Final = "story_views"

View = tuple[int, int, float]  # (story_id, viewer_id, viewed_unix_s)


async def record(db: Database, views: Sequence[View]) -> int:
    """Records a batch of first views in one transaction (one statement; pairs already
    recorded are skipped); returns the pairs in the batch."""
    if not views:
        return 0
    first: dict[tuple[int, int], float] = {}
    for story_id, viewer_id, at in views:
        key = (story_id, viewer_id)
        first[key] = min(at, first.get(key, at))
    rows = [{"story_id": s, "viewer_id": u, "viewed_unix_s": at} for (s, u), at in first.items()]
    insert = postgresql.insert if db.is_postgresql else sqlite.insert
    statement = insert(story_views).on_conflict_do_nothing(
        index_elements=[story_views.c.story_id, story_views.c.viewer_id]
    )
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(statement, rows)
    return len(rows)


async def viewers(
    db: Database, story_id: int, *, after: int | None, limit: int
) -> tuple[int, list[tuple[int, float]]]:
    """(recorded viewer count, a page of (viewer_id, viewed_unix_s) by viewer id above
    `after`)."""
    v = story_views.c
    query = (
        sa.select(v.viewer_id, v.viewed_unix_s)
        .where(v.story_id == story_id)
        .order_by(v.viewer_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(v.viewer_id > after)
    async with db.snapshot() as conn:
        count = (
            await conn.execute(sa.select(sa.func.count()).where(v.story_id == story_id))
        ).scalar_one()
        rows = [(int(r.viewer_id), float(r.viewed_unix_s)) for r in await conn.execute(query)]
    return int(count), rows
