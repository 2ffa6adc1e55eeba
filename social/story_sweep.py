"""The stories sweep: reclaiming, never expiring (expiry is a read filter, social/stories.py).

One pass, idempotent (a pass cut short leaves nothing to clean up):
1. archive: expired stories get `archived_unix_s` (they stay in the owner's archive);
2. reclaim: stories expired for at least [social] story_reclaim_grace_s and in no highlight
   get `reclaimed_unix_s`, and their media are set to expire now in the same transaction
   (transformer/media_store.py `expire`): the media workers' expiry sweep deletes their
   needles (recorded by the directory before the media is marked expired). A story taken
   out of its last highlight after that point is reclaimed by the next pass.

It runs as a `LeasedLoop` (common/jobs/lease.py: one process at a time) from the API's
cleanup context, every story_sweep_interval_s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from common.db import Database
from social.config import SocialConfig
from social.stories import LOCK
from social.stories_schema import highlight_stories, stories
from transformer import media_store

LEASE: Final = "stories_sweep"


@dataclass(frozen=True, slots=True)
class Swept:
    archived: int
    reclaimed: int
    media_ids: tuple[int, ...]  # the reclaimed stories' media, now expiring


async def sweep_once(db: Database, config: SocialConfig, *, now: float) -> Swept:
    s, h = stories.c, highlight_stories.c
    limit = config.story_sweep_batch_max
    async with db.transaction(lock=LOCK) as conn:
        due = (
            sa.select(s.story_id)
            .where(s.expires_unix_s <= now, s.archived_unix_s.is_(None))
            .limit(limit)
        )
        archive_ids = [int(r.story_id) for r in await conn.execute(due)]
        if archive_ids:
            await conn.execute(
                stories.update().where(s.story_id.in_(archive_ids)).values(archived_unix_s=now)
            )
        kept = sa.select(h.story_id)
        rows = (
            await conn.execute(
                sa.select(s.story_id, s.media_id)
                .where(
                    s.expires_unix_s <= now - config.story_reclaim_grace_s,
                    s.reclaimed_unix_s.is_(None),
                    s.story_id.not_in(kept),
                )
                .order_by(s.expires_unix_s)
                .limit(limit)
            )
        ).all()
        reclaim = [int(r.story_id) for r in rows]
        media_ids = tuple(int(r.media_id) for r in rows)
        if reclaim:
            await conn.execute(
                stories.update()
                .where(s.story_id.in_(reclaim))
                .values(
                    reclaimed_unix_s=now, archived_unix_s=sa.func.coalesce(s.archived_unix_s, now)
                )
            )
            await media_store.expire(conn, media_ids, now=now)
    return Swept(len(archive_ids), len(reclaim), media_ids)
