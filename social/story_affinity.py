"""How close a viewer is to each of some authors, for the stories tray's order: the
weighted sum of the viewer's messages in their 1:1 thread with the author, likes and
comments on the author's posts, and views of the author's stories ([social]
story_affinity_*_weight). Profile visits are not recorded, so they do not count. Four
grouped reads, each bounded to the given authors."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from social.config import SocialConfig
from social.messages_schema import dm_messages, dm_threads
from social.schema import comments, likes, posts
from social.stories_schema import stories, story_views


async def affinity(
    conn: AsyncConnection, config: SocialConfig, viewer: int, authors: Iterable[int]
) -> dict[int, int]:
    """author -> score (0 for none) for every author given."""
    wanted = sorted(set(authors) - {viewer})
    score = dict.fromkeys(wanted, 0)
    if not wanted:
        return score
    keys = {f"{min(viewer, a)}:{max(viewer, a)}": a for a in wanted}
    m, t = dm_messages.c, dm_threads.c
    rows = await conn.execute(
        sa.select(t.direct_key, sa.func.count())
        .select_from(dm_messages.join(dm_threads, t.thread_id == m.thread_id))
        .where(m.sender_id == viewer, t.direct_key.in_(list(keys)))
        .group_by(t.direct_key)
    )
    for key, n in rows:
        score[keys[key]] += config.story_affinity_dm_weight * int(n)
    p = posts.c
    for table, who, weight in (
        (likes, likes.c.user_id, config.story_affinity_like_weight),
        (comments, comments.c.author_id, config.story_affinity_comment_weight),
    ):
        rows = await conn.execute(
            sa.select(p.author_id, sa.func.count())
            .select_from(table.join(posts, p.post_id == table.c.post_id))
            .where(who == viewer, p.author_id.in_(wanted))
            .group_by(p.author_id)
        )
        for author, n in rows:
            score[int(author)] += weight * int(n)
    s, v = stories.c, story_views.c
    rows = await conn.execute(
        sa.select(s.author_id, sa.func.count())
        .select_from(story_views.join(stories, s.story_id == v.story_id))
        .where(v.viewer_id == viewer, s.author_id.in_(wanted))
        .group_by(s.author_id)
    )
    for author, n in rows:
        score[int(author)] += config.story_affinity_view_weight * int(n)
    return score
