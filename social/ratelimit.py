"""Write rate limits: fixed windows in the shared counters (social/counters.py), one counter
per (action, subject). Each limit is named in SocialConfig. The post limit is counted in
SQL from the posts themselves (`take_post`); the sign-in throttles are in social/signin.py."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from social.config import SocialConfig
from social.counters import Counters
from social.errors import RateLimited
from social.schema import posts

MINUTE_S: Final = 60
HOUR_S: Final = 3600
DAY_S: Final = 86400


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    remaining: int
    reset_s: float


def limits(config: SocialConfig) -> dict[str, tuple[int, int]]:
    """action -> (events allowed, window seconds)."""
    return {
        "comment": (config.comments_per_hour_max, HOUR_S),
        "like": (config.likes_per_hour_max, HOUR_S),
        "follow": (config.follows_per_hour_max, HOUR_S),
        "message": (config.messages_per_hour_max, HOUR_S),
        "account": (config.accounts_per_hour_max, HOUR_S),
    }


def window_text(window_s: int) -> str:
    """How a window reads in a message: "24 h", "1 h", "15 min"."""
    if window_s % HOUR_S == 0:
        return f"{window_s // HOUR_S} h"
    if window_s % MINUTE_S == 0:
        return f"{window_s // MINUTE_S} min"
    return f"{window_s} s"


def refused(what: str, limit: int, window_s: int, reset_s: float) -> RateLimited:
    return RateLimited(
        f"too many {what}: at most {limit} per {window_text(window_s)}; "
        f"retry in {int(reset_s) + 1} s",
        limit=limit,
        reset_s=reset_s,
    )


async def take(counters: Counters, config: SocialConfig, action: str, subject: str) -> Rate:
    """Counts one `action` by `subject`; raises RateLimited (429) beyond the limit."""
    limit, window_s = limits(config)[action]
    got = await counters.incr(f"{action}:{subject}", window_s=window_s)
    if got.count > limit:
        raise refused(f"{action}s", limit, window_s, got.reset_s)
    return Rate(limit, limit - got.count, got.reset_s)


async def take_post(conn: AsyncConnection, config: SocialConfig, author_id: int) -> Rate:
    """The post limit, counted in SQL inside the post's own transaction: a sliding day of
    the author's posts that were made (refused posts use none of it). Raises RateLimited."""
    now = time.time()
    since = now - DAY_S
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(posts.c.created_unix_s)).where(
                posts.c.author_id == author_id, posts.c.created_unix_s > since
            )
        )
    ).one()
    count, oldest = int(row[0]), row[1]
    limit = config.posts_per_day_max
    reset_s = DAY_S if oldest is None else max(0.0, float(oldest) + DAY_S - now)
    if count >= limit:
        raise RateLimited(
            f"too many posts: at most {limit} a day; retry in {int(reset_s) + 1} s",
            limit=limit,
            reset_s=reset_s,
        )
    return Rate(limit, limit - count - 1, reset_s)
