"""Keeping the search index and the hashtag and place counts in step with the rows they
index. Every function here runs inside the caller's write transaction, so an index row
commits or rolls back with its source row:

- sign-up (social/accounts.py create) and a profile edit of the full name
  (api/social_routes.py PATCH /accounts/me): `account_changed`;
- a new post (social/posts.py create): `post_added` (its hashtags and place counted and
  indexed, so a new hashtag is searchable once the post commits);
- a deleted post (social/posts.py delete): `post_removed` (counts down; an entity whose
  count reaches 0 stays searchable by name, ranked lower);
- a follow or unfollow (social/graph.py `_counts`): `followers_changed` (PostgreSQL keeps
  a copy of the count in its index rows to walk matches in popularity order).

`rebuild` recomputes the counts and every index row from the source tables (the search
migration and `pinhole search reindex`), the prefix keys' words last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from social.schema import hashtags, posts, users
from social.search_engines import engine_for
from social.search_schema import (
    KEYS_TABLE,
    create_words_table,
    drop_words_table,
    hashtag_counts,
    indexes_built_after,
    places,
    post_places,
)
from social.search_text import fold

REBUILD_BATCH_ROWS: Final = 2000
DELETED: Final = "deleted"  # social.posts.PostStatus.DELETED (posts imports this module)
Progress = Callable[[str, int, int], None]  # (kind, rows done, rows in all)


def account_fields(username: str, full_name: str) -> tuple[str, str]:
    return fold(username), fold(full_name)


async def account_changed(conn: AsyncConnection, user_id: int) -> None:
    """Indexes the user's current username and full name."""
    row = (
        await conn.execute(
            sa.select(users.c.username, users.c.full_name).where(users.c.user_id == user_id)
        )
    ).first()
    if row is None:
        return
    await engine_for(conn.dialect.name).put(
        conn, "accounts", [(user_id, account_fields(row.username, row.full_name))]
    )


async def _count_tags(conn: AsyncConnection, tags: Iterable[str], delta: int) -> None:
    wanted = sorted(set(tags))
    if not wanted:
        return
    c = hashtag_counts.c
    known = {r.tag for r in await conn.execute(sa.select(c.tag).where(c.tag.in_(wanted)))}
    if known:
        await conn.execute(
            hashtag_counts.update()
            .where(c.tag.in_(sorted(known)))
            .values(post_count=c.post_count + delta)
        )
        changed = await conn.execute(sa.select(c.tag_id).where(c.tag.in_(sorted(known))))
        await engine_for(conn.dialect.name).popularity_changed(
            conn, "hashtags", [int(r[0]) for r in changed]
        )
    fresh = [t for t in wanted if t not in known]
    if not fresh or delta < 0:
        return
    await conn.execute(hashtag_counts.insert(), [{"tag": t, "post_count": delta} for t in fresh])
    rows = await conn.execute(sa.select(c.tag_id, c.tag).where(c.tag.in_(fresh)))
    await engine_for(conn.dialect.name).put(
        conn, "hashtags", [(int(r.tag_id), (fold(r.tag),)) for r in rows]
    )


async def _count_place(conn: AsyncConnection, place_id: int, delta: int) -> None:
    await conn.execute(
        places.update()
        .where(places.c.place_id == place_id)
        .values(post_count=places.c.post_count + delta)
    )
    await engine_for(conn.dialect.name).popularity_changed(conn, "places", [place_id])


async def followers_changed(conn: AsyncConnection, user_id: int) -> None:
    """The user's follower count changed (social/graph.py, same transaction)."""
    await engine_for(conn.dialect.name).popularity_changed(conn, "accounts", [user_id])


async def post_added(conn: AsyncConnection, tags: Iterable[str], place_id: int | None) -> None:
    """Counts a new post under its hashtags (indexing the new ones) and its place."""
    await _count_tags(conn, tags, +1)
    if place_id is not None:
        await _count_place(conn, place_id, +1)


async def post_removed(conn: AsyncConnection, post_id: int) -> None:
    """Counts a deleted post out of its hashtags and its place."""
    tags = [
        str(r[0])
        for r in await conn.execute(sa.select(hashtags.c.tag).where(hashtags.c.post_id == post_id))
    ]
    await _count_tags(conn, tags, -1)
    place_id = (
        await conn.execute(
            sa.select(post_places.c.place_id).where(post_places.c.post_id == post_id)
        )
    ).scalar_one_or_none()
    if place_id is not None:
        await _count_place(conn, place_id, -1)


async def place_added(conn: AsyncConnection, place_id: int, name_key: str) -> None:
    await engine_for(conn.dialect.name).put(conn, "places", [(place_id, (name_key,))])


async def rebuild(conn: AsyncConnection, progress: Progress | None = None) -> dict[str, int]:
    """Recomputes the hashtag and place counts and rewrites every index row (the index
    tables must exist and may hold anything). Returns the rows indexed per kind."""
    engine = engine_for(conn.dialect.name)
    live = posts.c.status != DELETED
    await conn.execute(hashtag_counts.update().values(post_count=0))
    tag_counts = await conn.execute(
        sa.select(hashtags.c.tag, sa.func.count())
        .select_from(hashtags.join(posts, posts.c.post_id == hashtags.c.post_id))
        .where(live)
        .group_by(hashtags.c.tag)
    )
    counted = {str(t): int(n) for t, n in tag_counts}
    known = {str(r[0]) for r in await conn.execute(sa.select(hashtag_counts.c.tag))}
    fresh = [{"tag": t, "post_count": n} for t, n in counted.items() if t not in known]
    for i in range(0, len(fresh), REBUILD_BATCH_ROWS):
        await conn.execute(hashtag_counts.insert(), fresh[i : i + REBUILD_BATCH_ROWS])
    old = [{"t": t, "n": n} for t, n in counted.items() if t in known]
    if old:
        await conn.execute(
            hashtag_counts.update()
            .where(hashtag_counts.c.tag == sa.bindparam("t"))
            .values(post_count=sa.bindparam("n")),
            old,
        )
    place_counts = (
        sa.select(sa.func.count())
        .select_from(post_places.join(posts, posts.c.post_id == post_places.c.post_id))
        .where(post_places.c.place_id == places.c.place_id, live)
    )
    await conn.execute(places.update().values(post_count=place_counts.scalar_subquery()))

    sources = {
        "accounts": sa.select(users.c.user_id, users.c.username, users.c.full_name),
        "hashtags": sa.select(hashtag_counts.c.tag_id, hashtag_counts.c.tag),
        "places": sa.select(places.c.place_id, places.c.name_key),
    }
    done: dict[str, int] = {}
    async with indexes_built_after(conn):
        await conn.exec_driver_sql(f"DELETE FROM {KEYS_TABLE}")
        for kind in sources:
            await conn.exec_driver_sql(f"DELETE FROM search_{kind}")
        for kind, query in sources.items():
            total = int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(query.subquery()))
                ).scalar_one()
            )
            rows = (await conn.execute(query)).all()
            n = 0
            for i in range(0, len(rows), REBUILD_BATCH_ROWS):
                batch = [
                    (int(r[0]), tuple(fold(v) for v in r[1:]))
                    for r in rows[i : i + REBUILD_BATCH_ROWS]
                ]
                await engine.put(conn, kind, batch, fresh=True)
                n += len(batch)
                if progress is not None:
                    progress(kind, n, total)
            done[kind] = n
    # The words of the keys, in one pass over the keys' index, their trigrams in one more.
    await drop_words_table(conn)
    await create_words_table(conn)
    return done
