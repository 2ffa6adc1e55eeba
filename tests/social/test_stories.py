"""Stories through the service on SQLite and PostgreSQL, the time given to each call: the
daily limit; expiry exactly 24 h later with no sweep run; privacy, close friends and blocks;
the tray's order and seen state; views idempotent and written in batches; highlights kept
past expiry; the sweep reclaiming media after the grace hour but not highlighted ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from common.db import Database, migrate
from common.ids import IdGenerator
from feed.story_store import MemoryStoryStore
from feed.story_tray import forget_followers, read
from feed.story_views import ViewCounter
from social import (
    close_friends,
    graph,
    highlights,
    messages_schema,
    stories,
    stories_schema,
    story_reads,
    story_sweep,
    story_views,
)
from social.config import SocialConfig
from social.errors import NotVisible, RateLimited
from social.stories import NewStory
from social.stories_schema import STORY_LIFETIME_S
from tests.feed.conftest import make_user, ready_media, social_db
from transformer.schema import media as media_table

T0 = 1_900_000_000.0
CONFIG = SocialConfig(stories_per_day_max=3, story_views_flush_batch_max=50)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with social_db(request.param, tmp_path) as database:
        await migrate(database, messages_schema.COMPONENT, messages_schema.MIGRATIONS)
        await migrate(database, stories_schema.COMPONENT, stories_schema.MIGRATIONS)
        yield database


async def story(
    db: Database, ids: IdGenerator, author: int, at: float, audience: str = "followers"
) -> stories.Story:
    media_id = await ready_media(db, ids, author)
    return await stories.post(db, ids, CONFIG, author, NewStory(media_id, True, audience), now=at)


async def seen_by(db: Database, viewer: int, story_id: int, at: float) -> bool:
    """Whether the viewer sees the story, by the rules' two paths (they must agree)."""
    try:
        async with db.snapshot() as conn:
            await stories.visible(conn, viewer, story_id, now=at)
        found = True
    except NotVisible:
        found = False
    try:
        one = await story_reads.visible_live(db, viewer, story_id, now=at)
        assert one.story_id == story_id and found
    except NotVisible:
        assert not found
    return found


async def test_daily_limit_and_exact_expiry_without_a_sweep(db: Database) -> None:
    ids = IdGenerator(1)
    ann = await make_user(db, ids)
    bea = await make_user(db, ids)
    first = await story(db, ids, ann, T0)
    assert first.expires_unix_s == T0 + STORY_LIFETIME_S
    await story(db, ids, ann, T0 + 10)
    await story(db, ids, ann, T0 + 20)
    with pytest.raises(RateLimited) as hit:
        await story(db, ids, ann, T0 + 30)
    assert hit.value.limit == 3 and hit.value.reset_s == pytest.approx(STORY_LIFETIME_S - 30)
    # The oldest leaves the 24 h window: one more is allowed.
    await story(db, ids, ann, T0 + STORY_LIFETIME_S + 1)
    # Expiry is the read filter: live a moment before, gone at the instant, no sweep ran.
    assert await seen_by(db, bea, first.story_id, T0 + STORY_LIFETIME_S - 0.001)
    assert not await seen_by(db, bea, first.story_id, T0 + STORY_LIFETIME_S)
    async with db.snapshot() as conn:
        reel = await stories.reel(conn, bea, ann, now=T0 + STORY_LIFETIME_S + 5)
        row = (
            await conn.execute(
                sa.select(stories_schema.stories.c.archived_unix_s).where(
                    stories_schema.stories.c.story_id == first.story_id
                )
            )
        ).scalar_one()
    assert [s.created_unix_s for s in reel] == [T0 + 10, T0 + 20, T0 + STORY_LIFETIME_S + 1]
    assert row is None  # no sweep has run


async def test_private_close_friends_and_blocks(db: Database) -> None:
    ids = IdGenerator(1)
    ann = await make_user(db, ids, private=True)
    fan, stranger, friend = [await make_user(db, ids) for _ in range(3)]
    async with db.transaction() as conn:
        await conn.execute(
            sa.text("INSERT INTO follows VALUES (:a, :b, 0)"),
            [{"a": fan, "b": ann}, {"a": friend, "b": ann}],
        )
    public = await story(db, ids, ann, T0)
    inner = await story(db, ids, ann, T0 + 1, audience="close_friends")
    await close_friends.add(db, CONFIG, ann, friend)
    at = T0 + 60
    assert await seen_by(db, fan, public.story_id, at)
    assert not await seen_by(db, stranger, public.story_id, at)  # private: followers only
    assert not await seen_by(db, fan, inner.story_id, at)  # close friends only
    assert await seen_by(db, friend, inner.story_id, at)
    assert await seen_by(db, ann, inner.story_id, at)
    await graph.block(db, friend, ann)  # the friend blocks the author: nothing either way
    assert await story_reads.blocked_among(db, ann, [friend, fan]) == {friend}
    assert await story_reads.blocked_among(db, friend, [ann, fan]) == {ann}
    assert not await seen_by(db, friend, public.story_id, at)
    assert not await seen_by(db, friend, inner.story_id, at)


async def test_tray_order_seen_state_and_cache(db: Database) -> None:
    ids = IdGenerator(1)
    store = MemoryStoryStore()
    views = ViewCounter(db, store, CONFIG)
    me = await make_user(db, ids)
    close, far, quiet, unfollowed = [await make_user(db, ids) for _ in range(4)]
    async with db.transaction() as conn:
        await conn.execute(
            sa.text("INSERT INTO follows VALUES (:a, :b, 0)"),
            [{"a": me, "b": u} for u in (close, far, quiet)],
        )
        # Affinity: the viewer likes a post of `close`.
        await conn.execute(
            sa.text("INSERT INTO posts VALUES (:p, :a, '', NULL, 'live', 0, 0, 0, NULL)"),
            {"p": 99, "a": close},
        )
        await conn.execute(sa.text("INSERT INTO likes VALUES (:u, 99, 0)"), {"u": me})
    f1 = await story(db, ids, far, T0)
    c1 = await story(db, ids, close, T0 + 1)
    c2 = await story(db, ids, close, T0 + 2)
    mine = await story(db, ids, me, T0 + 3)
    await story(db, ids, unfollowed, T0 + 4)
    at = T0 + 100
    tray = await read(db, store, CONFIG, me, now=at)
    assert not tray.cached
    assert [a.user_id for a in tray.authors] == [me, close, far]  # own first, then affinity
    assert [s.story_id for s in tray.authors[1].stories] == [c1.story_id, c2.story_id]
    assert tray.authors[0].stories[0].story_id == mine.story_id
    # Seeing every story of `close` puts it after `far` (unseen first); not cached state.
    for s in (c1, c2):
        assert await views.mark_seen(s, me, now=at)
    tray = await read(db, store, CONFIG, me, now=at + 1)
    assert tray.cached
    assert [a.user_id for a in tray.authors] == [me, far, close]
    assert [x.seen for x in tray.authors[2].stories] == [True, True]
    assert [x.seen for x in tray.authors[1].stories] == [False]
    # A followed author posting drops the cached tray; the new story is in the next one.
    q1 = await story(db, ids, quiet, at + 2)
    await forget_followers(db, store, quiet)
    tray = await read(db, store, CONFIG, me, now=at + 3)
    assert not tray.cached and q1.story_id in [s.story_id for a in tray.authors for s in a.stories]
    # The earliest story's expiry makes the cached tray stale.
    tray = await read(db, store, CONFIG, me, now=f1.expires_unix_s)
    assert not tray.cached and far not in [a.user_id for a in tray.authors]
    # A block hides the author from a cached tray at once.
    assert (await read(db, store, CONFIG, me, now=f1.expires_unix_s + 0.5)).cached
    await graph.block(db, close, me)
    tray = await read(db, store, CONFIG, me, now=f1.expires_unix_s + 0.6)
    assert tray.cached and close not in [a.user_id for a in tray.authors]


class ChangeBeforeStore(MemoryStoryStore):
    """The embedded store, with a change (a commit and its tray drop) run once just before
    a tray is stored: as a follow committing while another request builds the tray from a
    snapshot taken before it."""

    def __init__(self) -> None:
        super().__init__()
        self.change: Callable[[], Awaitable[None]] | None = None

    async def put_tray(
        self, viewer_id: int, payload: bytes, *, ttl_s: float, generation: int
    ) -> bool:
        change, self.change = self.change, None
        if change is not None:
            await change()
        return await super().put_tray(viewer_id, payload, ttl_s=ttl_s, generation=generation)


async def test_a_tray_built_before_an_unfollow_is_not_cached_after_it(db: Database) -> None:
    ids = IdGenerator(1)
    store = ChangeBeforeStore()
    me, author = await make_user(db, ids), await make_user(db, ids)
    await graph.follow(db, ids, me, author)
    await story(db, ids, author, T0)

    async def unfollow() -> None:
        await graph.unfollow(db, me, author)
        await store.drop_trays([me])  # what the API does after the commit

    store.change = unfollow
    tray = await read(db, store, CONFIG, me, now=T0 + 1)
    assert [a.user_id for a in tray.authors] == [author]  # as of its snapshot
    tray = await read(db, store, CONFIG, me, now=T0 + 2)
    assert not tray.cached and tray.authors == ()
    assert (await read(db, store, CONFIG, me, now=T0 + 3)).cached


async def test_views_idempotent_and_written_in_batches(db: Database) -> None:
    ids = IdGenerator(1)
    store = MemoryStoryStore()
    views = ViewCounter(db, store, CONFIG)
    ann = await make_user(db, ids)
    s = await story(db, ids, ann, T0)
    fans = [await make_user(db, ids) for _ in range(120)]
    for fan in fans:
        assert await views.mark_seen(s, fan, now=T0 + 1)
        assert not await views.mark_seen(s, fan, now=T0 + 2)  # a repeat changes nothing
    assert await store.view_counts([s.story_id]) == {s.story_id: 120}
    assert views.statistics().sql_writes == 0
    assert await views.flush_once() == 120
    stats = views.statistics()
    assert stats.views == 240 and stats.first_views == 120
    assert stats.sql_writes == 3  # batches of 50
    count, page = await story_views.viewers(db, s.story_id, after=None, limit=100)
    assert count == 120 and [u for u, _ in page] == sorted(fans)[:100]
    # A batch replayed (after a crash between SQL and the queue) adds nothing.
    assert await story_views.record(db, [(s.story_id, fans[0], T0 + 1)]) == 1
    assert (await story_views.viewers(db, s.story_id, after=None, limit=1))[0] == 120


async def test_highlights_survive_expiry_and_the_sweep_reclaims_after_grace(db: Database) -> None:
    ids = IdGenerator(1)
    ann = await make_user(db, ids)
    fan = await make_user(db, ids)
    kept = await story(db, ids, ann, T0)
    gone = await story(db, ids, ann, T0 + 1)
    highlight_id = await highlights.create(
        db, ids, CONFIG, ann, title="trip", story_ids=[kept.story_id]
    )
    expired = T0 + 1 + STORY_LIFETIME_S
    swept = await story_sweep.sweep_once(db, CONFIG, now=expired)
    assert (swept.archived, swept.reclaimed) == (2, 0)  # within the grace hour: archived only
    swept = await story_sweep.sweep_once(db, CONFIG, now=expired + CONFIG.story_reclaim_grace_s)
    assert swept.reclaimed == 1 and swept.media_ids == (gone.media_id,)
    async with db.snapshot() as conn:
        rows = {
            r.media_id: r.expires_unix_s
            for r in await conn.execute(
                sa.select(media_table.c.media_id, media_table.c.expires_unix_s).where(
                    media_table.c.media_id.in_([kept.media_id, gone.media_id])
                )
            )
        }
    # The reclaimed story's media now expires (the media workers delete its needles);
    # the highlighted one stays attached.
    assert rows == {gone.media_id: expired + CONFIG.story_reclaim_grace_s, kept.media_id: None}
    found = await highlights.get(db, fan, highlight_id)
    assert [s.story_id for s in found.stories] == [kept.story_id]
    # Out of its last highlight, the next pass reclaims it too.
    await highlights.delete(db, ann, highlight_id)
    swept = await story_sweep.sweep_once(db, CONFIG, now=expired + 2 * 3600)
    assert swept.media_ids == (kept.media_id,)
    assert (await story_sweep.sweep_once(db, CONFIG, now=expired + 3 * 3600)).reclaimed == 0
