"""The close-friends list of each user (docs/api/stories.md): who sees the owner's
close-friends stories. At most [social] close_friends_max accounts; blocks either way keep
an account off it (and hide the stories anyway)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from common.db import Database
from social import accounts, graph
from social.config import SocialConfig
from social.errors import Invalid, NotVisible
from social.stories import LOCK
from social.stories_schema import close_friends


async def add(db: Database, config: SocialConfig, owner: int, friend: int) -> bool:
    """Puts `friend` on the owner's list; False when already there."""
    if friend == owner:
        raise Invalid("you cannot add yourself to your close friends")
    c = close_friends.c
    async with db.transaction(lock=LOCK) as conn:
        if await accounts.get(conn, friend) is None or await graph.blocked_between(
            conn, owner, [friend]
        ):
            raise NotVisible("no such user")
        there = (
            await conn.execute(
                sa.select(c.friend_id).where(c.owner_id == owner, c.friend_id == friend)
            )
        ).first()
        if there is not None:
            return False
        count = (
            await conn.execute(sa.select(sa.func.count()).where(c.owner_id == owner))
        ).scalar_one()
        if count >= config.close_friends_max:
            raise Invalid(
                f"a close-friends list holds at most {config.close_friends_max} accounts",
                code="close_friends_full",
            )
        await conn.execute(
            close_friends.insert().values(
                owner_id=owner, friend_id=friend, created_unix_s=time.time()
            )
        )
    return True


async def remove(db: Database, owner: int, friend: int) -> bool:
    c = close_friends.c
    async with db.transaction(lock=LOCK) as conn:
        done = await conn.execute(
            close_friends.delete().where(c.owner_id == owner, c.friend_id == friend)
        )
    return bool(done.rowcount)


async def page(db: Database, owner: int, *, after: int | None, limit: int) -> list[int]:
    """The owner's close friends by user id, above `after`."""
    c = close_friends.c
    query = sa.select(c.friend_id).where(c.owner_id == owner).order_by(c.friend_id).limit(limit)
    if after is not None:
        query = query.where(c.friend_id > after)
    async with db.snapshot() as conn:
        return [int(r.friend_id) for r in await conn.execute(query)]
