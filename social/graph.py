"""The follow graph: follows, follow requests (private accounts), blocks; lists with
cursors. Every change runs in one write transaction with its counters and notification,
so the graph is strongly consistent (the feed trims timelines after the commit)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from social import accounts, notify, search_index
from social.errors import Forbidden, Invalid, NotVisible
from social.schema import blocks, follow_requests, follows, users

LOCK: Final = "social"


@dataclass(frozen=True, slots=True)
class Relationship:
    following: bool
    followed_by: bool
    requested: bool
    blocking: bool
    blocked_by: bool


async def relationship(conn: AsyncConnection, viewer: int, other: int) -> Relationship:
    f, r, b = follows.c, follow_requests.c, blocks.c
    following = await conn.execute(
        sa.select(f.follower_id, f.followee_id).where(
            sa.or_(
                sa.and_(f.follower_id == viewer, f.followee_id == other),
                sa.and_(f.follower_id == other, f.followee_id == viewer),
            )
        )
    )
    pairs = {(a, c) for a, c in following}
    requested = await conn.execute(
        sa.select(r.requester_id).where(r.requester_id == viewer, r.target_id == other)
    )
    blocked = await conn.execute(
        sa.select(b.blocker_id, b.blocked_id).where(
            sa.or_(
                sa.and_(b.blocker_id == viewer, b.blocked_id == other),
                sa.and_(b.blocker_id == other, b.blocked_id == viewer),
            )
        )
    )
    block_pairs = {(a, c) for a, c in blocked}
    return Relationship(
        following=(viewer, other) in pairs,
        followed_by=(other, viewer) in pairs,
        requested=requested.first() is not None,
        blocking=(viewer, other) in block_pairs,
        blocked_by=(other, viewer) in block_pairs,
    )


async def blocked_between(conn: AsyncConnection, viewer: int, others: Iterable[int]) -> set[int]:
    """The users among `others` who block the viewer or whom the viewer blocks."""
    wanted = sorted(set(others) - {viewer})
    if not wanted:
        return set()
    b = blocks.c
    rows = await conn.execute(
        sa.select(b.blocker_id, b.blocked_id).where(
            sa.or_(
                sa.and_(b.blocker_id == viewer, b.blocked_id.in_(wanted)),
                sa.and_(b.blocked_id == viewer, b.blocker_id.in_(wanted)),
            )
        )
    )
    return {blocked if blocker == viewer else blocker for blocker, blocked in rows}


async def followed_among(conn: AsyncConnection, viewer: int, others: Iterable[int]) -> set[int]:
    wanted = sorted(set(others))
    if not wanted:
        return set()
    f = follows.c
    rows = await conn.execute(
        sa.select(f.followee_id).where(f.follower_id == viewer, f.followee_id.in_(wanted))
    )
    return {int(r[0]) for r in rows}


async def visible_authors(
    conn: AsyncConnection, viewer: int, owners: dict[int, accounts.User]
) -> set[int]:
    """The owners whose posts and media the viewer may see: themselves, public accounts
    and private ones they follow, minus blocks either way."""
    blocked = await blocked_between(conn, viewer, owners)
    private = [u for u, user in owners.items() if user.is_private and u != viewer]
    followed = await followed_among(conn, viewer, private)
    return {
        u
        for u, user in owners.items()
        if u not in blocked and (u == viewer or not user.is_private or u in followed)
    }


async def _counts(conn: AsyncConnection, follower: int, followee: int, delta: int) -> None:
    await conn.execute(
        users.update()
        .where(users.c.user_id == follower)
        .values(following_count=users.c.following_count + delta)
    )
    await conn.execute(
        users.update()
        .where(users.c.user_id == followee)
        .values(follower_count=users.c.follower_count + delta)
    )
    await search_index.followers_changed(conn, followee)


async def follow(db: Database, id_gen: IdGenerator, follower: int, followee: int) -> str:
    """Follows a public account ("following") or asks a private one ("requested").
    Idempotent. Raises NotVisible (no such user, or a block either way), Invalid (oneself)."""
    if follower == followee:
        raise Invalid("you cannot follow yourself", code="self_follow")
    now = time.time()

    async def unit(conn: AsyncConnection) -> str:
        target = await accounts.get(conn, followee)
        if target is None or await blocked_between(conn, follower, [followee]):
            raise NotVisible("no such user")
        rel = await relationship(conn, follower, followee)
        if rel.following:
            return "following"
        if rel.requested:
            return "requested"
        if target.is_private:
            await conn.execute(
                follow_requests.insert().values(
                    requester_id=follower,
                    target_id=followee,
                    request_id=id_gen.next_id(),
                    created_unix_s=now,
                )
            )
            await notify.add(
                conn, id_gen, recipients=[followee], kind="follow_request", actor_id=follower
            )
            return "requested"
        await _insert_follow(conn, id_gen, follower, followee, now)
        return "following"

    # A hot write: one thread hop on SQLite (common/quickwrite.py).
    return await db.write(unit, lock=LOCK)


async def _insert_follow(
    conn: AsyncConnection, id_gen: IdGenerator, follower: int, followee: int, now: float
) -> None:
    await conn.execute(
        follows.insert().values(follower_id=follower, followee_id=followee, created_unix_s=now)
    )
    await _counts(conn, follower, followee, +1)
    await notify.add(conn, id_gen, recipients=[followee], kind="follow", actor_id=follower)


async def unfollow(db: Database, follower: int, followee: int) -> bool:
    """Stops following (or withdraws a request); True when something changed."""

    async def unit(conn: AsyncConnection) -> bool:
        return await _unfollow(conn, follower, followee)

    return await db.write(unit, lock=LOCK)


async def _unfollow(conn: AsyncConnection, follower: int, followee: int) -> bool:
    f, r = follows.c, follow_requests.c
    gone = await conn.execute(
        follows.delete().where(f.follower_id == follower, f.followee_id == followee)
    )
    if gone.rowcount:
        await _counts(conn, follower, followee, -1)
        await notify.retract(conn, recipient=followee, kind="follow", actor_id=follower)
    withdrawn = await conn.execute(
        follow_requests.delete().where(r.requester_id == follower, r.target_id == followee)
    )
    if withdrawn.rowcount:
        await notify.retract(conn, recipient=followee, kind="follow_request", actor_id=follower)
    return bool(gone.rowcount or withdrawn.rowcount)


async def answer_request(
    db: Database, id_gen: IdGenerator, target: int, requester: int, *, approve: bool
) -> None:
    """Approves (the requester now follows) or denies a pending request; NotVisible if none."""
    r = follow_requests.c
    async with db.transaction(lock=LOCK) as conn:
        gone = await conn.execute(
            follow_requests.delete().where(r.requester_id == requester, r.target_id == target)
        )
        if not gone.rowcount:
            raise NotVisible("no such follow request")
        await notify.retract(conn, recipient=target, kind="follow_request", actor_id=requester)
        if approve:
            await _insert_follow(conn, id_gen, requester, target, time.time())


async def block(db: Database, blocker: int, blocked: int) -> None:
    """Blocks a user: follows both ways and pending requests go. Idempotent."""
    if blocker == blocked:
        raise Invalid("you cannot block yourself", code="self_block")
    async with db.transaction(lock=LOCK) as conn:
        if await accounts.get(conn, blocked) is None:
            raise NotVisible("no such user")
        exists = await conn.execute(
            sa.select(blocks.c.blocker_id).where(
                blocks.c.blocker_id == blocker, blocks.c.blocked_id == blocked
            )
        )
        if exists.first() is not None:
            return
        await conn.execute(
            blocks.insert().values(
                blocker_id=blocker, blocked_id=blocked, created_unix_s=time.time()
            )
        )
        await _unfollow(conn, blocker, blocked)
        await _unfollow(conn, blocked, blocker)


async def unblock(db: Database, blocker: int, blocked: int) -> bool:
    async with db.transaction(lock=LOCK) as conn:
        gone = await conn.execute(
            blocks.delete().where(blocks.c.blocker_id == blocker, blocks.c.blocked_id == blocked)
        )
    return bool(gone.rowcount)


async def require_visible(conn: AsyncConnection, viewer: int, owner_id: int) -> accounts.User:
    """The owner when the viewer may see their content; NotVisible when blocked either way
    (or no such user), Forbidden for a private account the viewer does not follow."""
    owner = await accounts.get(conn, owner_id)
    if owner is None or await blocked_between(conn, viewer, [owner_id]):
        raise NotVisible("no such user")
    if (
        owner.is_private
        and viewer != owner_id
        and not await followed_among(conn, viewer, [owner_id])
    ):
        raise Forbidden("this account is private", code="private_account")
    return owner


async def follow_list(
    db: Database, user_id: int, *, direction: str, before: int | None, limit: int
) -> list[int]:
    """Followers (direction "followers") or followees ("following") of a user, newest
    account first (user id order); the cursor is the last user id of a page."""
    f = follows.c
    if direction == "followers":
        mine, theirs = f.followee_id, f.follower_id
    else:
        mine, theirs = f.follower_id, f.followee_id
    query = sa.select(theirs).where(mine == user_id).order_by(theirs.desc()).limit(limit)
    if before is not None:
        query = query.where(theirs < before)
    async with db.snapshot() as conn:
        return [int(r[0]) for r in await conn.execute(query)]


async def pending_requests(
    db: Database, target: int, *, before: int | None, limit: int
) -> list[tuple[int, int]]:
    """(request_id, requester_id) of requests to `target`, newest first."""
    r = follow_requests.c
    query = (
        sa.select(r.request_id, r.requester_id)
        .where(r.target_id == target)
        .order_by(r.request_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(r.request_id < before)
    async with db.snapshot() as conn:
        return [(int(a), int(b)) for a, b in await conn.execute(query)]


async def followees(conn: AsyncConnection, user_id: int) -> list[int]:
    rows = await conn.execute(
        sa.select(follows.c.followee_id).where(follows.c.follower_id == user_id)
    )
    return [int(r[0]) for r in rows]


async def approve_all_requests(
    conn: AsyncConnection, id_gen: IdGenerator, target: int
) -> list[int]:
    """An account turning public accepts every pending request to it (inside the caller's
    transaction); returns the new followers, whose timelines the feed then backfills."""
    r = follow_requests.c
    rows = await conn.execute(sa.select(r.requester_id).where(r.target_id == target))
    requesters = sorted(int(x[0]) for x in rows)
    now = time.time()
    for requester in requesters:
        await conn.execute(
            follow_requests.delete().where(r.requester_id == requester, r.target_id == target)
        )
        await notify.retract(conn, recipient=target, kind="follow_request", actor_id=requester)
        await _insert_follow(conn, id_gen, requester, target, now)
    return requesters
