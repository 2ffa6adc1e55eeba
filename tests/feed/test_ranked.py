"""Ranked pages: one order for a whole session, however much time passes between pages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.ids import IdGenerator
from feed import jobs
from feed.config import FeedConfig
from feed.cursor import Cursor
from feed.hotstore import MemoryHotStore
from feed.runner import FanoutRunner
from feed.service import Feed
from social import graph, posts
from social.config import SocialConfig
from social.schema import posts as post_t
from tests.feed.conftest import make_user, ready_media, social_db

HOUR_S = 3600.0


async def test_a_ranked_session_keeps_its_order_as_the_clock_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with social_db("sqlite", tmp_path) as db:
        feed = Feed(db, MemoryHotStore(), FeedConfig())
        id_gen = IdGenerator(3)
        viewer, author = await make_user(db, id_gen), await make_user(db, id_gen)
        await graph.follow(db, id_gen, viewer, author)
        now = time.time()
        # (hours old, likes): at first two fresh posts and two liked older ones interleave;
        # a day later, were ages counted from the clock, the liked ones would lead.
        shape = [(13.0, 20), (12.0, 20), (1.0, 0), (0.0, 0)]
        made = []
        for hours, like_count in shape:
            media = await ready_media(db, id_gen, author)
            async with db.transaction(lock=posts.LOCK) as conn:
                post = await posts.create(
                    conn, id_gen, SocialConfig(), author, {"media_ids": [str(media)]}
                )
                await jobs.enqueue(
                    conn,
                    id_gen,
                    "publish",
                    post_id=post.post_id,
                    author_id=author,
                    attempts_max=feed.config.attempts_max,
                )
                await conn.execute(
                    post_t.update()
                    .where(post_t.c.post_id == post.post_id)
                    .values(created_unix_s=now - hours * HOUR_S, like_count=like_count)
                )
            made.append(post.post_id)
        await FanoutRunner(feed).drain()

        first = await feed.ranked(viewer, Cursor(), 2)
        assert [e[0] for e in first.entries] == [made[1], made[3]]  # liked 12 h, then fresh
        assert first.next_cursor is not None
        monkeypatch.setattr(time, "time", lambda: now + 24 * HOUR_S)
        second = await feed.ranked(viewer, first.next_cursor, 2)
        assert [e[0] for e in second.entries] == [made[0], made[2]]
        assert not second.has_more
