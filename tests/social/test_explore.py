"""Explore on SQLite and PostgreSQL, through the service on a migrated database:
co-engagement recommends what a like-minded account liked; blocks (either way, also after
the list was computed) and private accounts filter every page; the viewer's own posts, the
accounts they follow and the posts they liked never appear; a page holds at most k posts of
an author and of a hashtag; an account with no likes gets trending posts; the refresh pass
stores a list for each active account."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from common.config import ConfigError, load_toml
from common.db import Database, migrate
from common.ids import IdGenerator
from social import explore, explore_schema, posts
from social.config import SocialConfig
from social.errors import Invalid
from social.explore_config import ExploreConfig, explore_config
from social.schema import blocks, follows, likes, users
from social.schema import posts as post_table
from tests.feed.conftest import make_user, ready_media, social_db

CONFIG = ExploreConfig()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with social_db(request.param, tmp_path) as database:
        await migrate(database, explore_schema.COMPONENT, explore_schema.MIGRATIONS)
        yield database


@pytest.fixture
def ids() -> IdGenerator:
    return IdGenerator(1)


async def post(db: Database, ids: IdGenerator, author: int, caption: str = "") -> int:
    media_id = await ready_media(db, ids, author)
    body: dict[str, Any] = {"media_ids": [str(media_id)], "caption": caption}
    async with db.transaction(lock=posts.LOCK) as conn:
        created = await posts.create(conn, ids, SocialConfig(), author, body)
    return created.post_id


async def like(db: Database, user: int, post_id: int, *, at: float | None = None) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            likes.insert().values(
                user_id=user, post_id=post_id, created_unix_s=time.time() if at is None else at
            )
        )
        await conn.execute(
            post_table.update()
            .where(post_table.c.post_id == post_id)
            .values(like_count=post_table.c.like_count + 1)
        )


async def relate(db: Database, table: sa.Table, a: int, b: int) -> None:
    names = [c.name for c in table.primary_key.columns]
    async with db.transaction() as conn:
        await conn.execute(
            table.insert().values({names[0]: a, names[1]: b, "created_unix_s": time.time()})
        )


async def every_page(
    db: Database, viewer: int, *, limit: int, config: ExploreConfig = CONFIG
) -> list[list[int]]:
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        found = await explore.page(db, config, viewer, cursor=cursor, limit=limit, now=time.time())
        pages.append(found.post_ids)
        cursor = found.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 100


async def test_co_engagement_recommends_the_neighbours_likes(
    db: Database, ids: IdGenerator
) -> None:
    viewer, neighbour, a, b, c = [await make_user(db, ids) for _ in range(5)]
    crowd = [await make_user(db, ids) for _ in range(3)]
    shared = [await post(db, ids, a) for _ in range(2)]
    theirs = [await post(db, ids, b), await post(db, ids, b)]
    popular = await post(db, ids, c)  # liked by more accounts than `theirs`, not by neighbours
    for p in shared:
        await like(db, viewer, p)
        await like(db, neighbour, p)
    for p in theirs:
        await like(db, neighbour, p)
    for u in crowd:
        await like(db, u, popular)
    listed = (
        await explore.page(db, CONFIG, viewer, cursor=None, limit=24, now=time.time())
    ).post_ids
    assert set(listed[:2]) == set(theirs)
    assert popular in listed[2:]
    assert not set(shared) & set(listed)  # liked posts count as seen
    # A popularity-only account (no likes) gets the popular post first.
    stranger = await make_user(db, ids)
    cold = (
        await explore.page(db, CONFIG, stranger, cursor=None, limit=24, now=time.time())
    ).post_ids
    assert cold[0] == popular


async def test_blocks_private_own_and_followed_filter_every_page(
    db: Database, ids: IdGenerator
) -> None:
    viewer, neighbour = await make_user(db, ids), await make_user(db, ids)
    fine = [await make_user(db, ids) for _ in range(4)]
    blocked, blocker, followed = [await make_user(db, ids) for _ in range(3)]
    private = await make_user(db, ids, private=True)
    late = await make_user(db, ids)  # blocked after the list was computed
    seed = await post(db, ids, fine[0])
    await like(db, viewer, seed)
    await like(db, neighbour, seed)
    ok_posts = [await post(db, ids, u) for u in fine[1:] for _ in range(2)]
    hidden_authors = [blocked, blocker, followed, private, viewer, late]
    hidden = {await post(db, ids, u): u for u in hidden_authors for _ in range(2)}
    for p in [*ok_posts, *hidden]:
        await like(db, neighbour, p)
    await relate(db, blocks, viewer, blocked)
    await relate(db, blocks, blocker, viewer)
    await relate(db, follows, viewer, followed)
    await explore.compute_for(db, CONFIG, viewer, now=time.time())
    async with db.snapshot() as conn:
        stored = await explore.stored_list(conn, viewer)
    assert stored is not None
    late_posts = {p for p, u in hidden.items() if u == late}
    assert late_posts <= set(stored[1])  # listed before the block
    assert not (set(hidden) - late_posts) & set(stored[1])
    await relate(db, blocks, viewer, late)
    pages = await every_page(db, viewer, limit=2)
    shown = [p for page in pages for p in page]
    assert set(shown) == set(ok_posts)
    assert all(len(page) <= 2 for page in pages)
    # Nothing of the blocker's either, on the blocker's own Explore.
    assert not {p for p, u in hidden.items() if u == viewer} & {
        p for page in await every_page(db, blocker, limit=5) for p in page
    }


async def test_diversification_caps_authors_and_hashtags(db: Database, ids: IdGenerator) -> None:
    config = ExploreConfig(
        page_posts_default=4, per_author_per_page_max=2, per_hashtag_per_page_max=2
    )
    viewer, neighbour, seed_author, prolific = [await make_user(db, ids) for _ in range(4)]
    seed = await post(db, ids, seed_author)
    await like(db, viewer, seed)
    await like(db, neighbour, seed)
    one_author = [await post(db, ids, prolific, f"#p{i}") for i in range(5)]
    tagged = [await post(db, ids, await make_user(db, ids), "#same") for _ in range(5)]
    for p in [*one_author, *tagged]:
        await like(db, neighbour, p)
    pages = await every_page(db, viewer, limit=4, config=config)
    shown = [p for page in pages for p in page]
    assert sorted(shown) == sorted(one_author + tagged)
    for page in pages:
        assert len([p for p in page if p in one_author]) <= 2
        assert len([p for p in page if p in tagged]) <= 2


async def test_cold_start_is_trending(db: Database, ids: IdGenerator) -> None:
    now = time.time()
    newcomer, rising, steady = [await make_user(db, ids) for _ in range(3)]
    fans = [await make_user(db, ids) for _ in range(8)]
    hot = await post(db, ids, rising)
    quiet = [await post(db, ids, rising) for _ in range(2)]
    old = await post(db, ids, steady)
    for u in fans[:6]:
        await like(db, u, hot)
    for u in fans:  # more likes, but all a week ago: not trending
        await like(db, u, old, at=now - 7 * 86400)
    listed = (await explore.page(db, CONFIG, newcomer, cursor=None, limit=24, now=now)).post_ids
    # Trending first; then popularity; posts with no signal at all are not listed.
    assert listed == [hot, old]
    assert not set(quiet) & set(listed)


async def test_refresh_stores_lists_of_active_accounts(db: Database, ids: IdGenerator) -> None:
    active, idle, author = [await make_user(db, ids) for _ in range(3)]
    p = await post(db, ids, author)
    await like(db, author, p)
    now = time.time()
    async with db.transaction() as conn:
        await conn.execute(users.update().values(active_unix_s=now - 30 * 86400))
        await conn.execute(
            users.update().where(users.c.user_id == active).values(active_unix_s=now)
        )
    done = await explore.refresh_once(db, CONFIG, now=now)
    assert done.users == 1 and done.posts == 1 and done.likes == 1
    async with db.snapshot() as conn:
        assert await explore.stored_list(conn, active) == (now, [p])
        assert await explore.stored_list(conn, idle) is None
    with pytest.raises(Invalid):
        await explore.page(db, CONFIG, active, cursor="x1", limit=5, now=now)


def test_the_example_file_lists_the_explore_defaults() -> None:
    example = Path(__file__).parents[2] / "pinhole.example.toml"
    assert explore_config(load_toml(example)) == ExploreConfig()
    with pytest.raises(ConfigError, match="page_posts_default"):
        explore_config({"explore": {"page_posts_default": 0}})
    with pytest.raises(ConfigError, match="weights"):
        explore_config({"explore": {"weights": 1}})
