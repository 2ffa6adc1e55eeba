"""Write rate limits: fixed windows counted in the hot store (Redis INCR with a TTL, or the
embedded store), one counter per (action, subject). Each limit is named in SocialConfig."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from feed.hotstore import HotStore
from social.config import SocialConfig
from social.errors import RateLimited
from social.schema import posts

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
        "post": (config.posts_per_day_max, DAY_S),
        "comment": (config.comments_per_hour_max, HOUR_S),
        "like": (config.likes_per_hour_max, HOUR_S),
        "follow": (config.follows_per_hour_max, HOUR_S),
        "message": (config.messages_per_hour_max, HOUR_S),
        "account": (config.accounts_per_hour_max, HOUR_S),
        "login": (config.logins_per_hour_max, HOUR_S),
    }


async def take(hot: HotStore, config: SocialConfig, action: str, subject: str) -> Rate:
    """Counts one `action` by `subject`; raises RateLimited (429) beyond the limit."""
    limit, window_s = limits(config)[action]
    count, reset_s = await hot.incr_window(f"rl:{action}:{subject}", window_s=window_s)
    if count > limit:
        raise RateLimited(
            f"too many {action}s: at most {limit} per {window_s // HOUR_S} h; "
            f"retry in {int(reset_s) + 1} s",
            limit=limit,
            reset_s=reset_s,
        )
    return Rate(limit, limit - count, reset_s)


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
