"""The social tables and their migrations (docs/formats/social-schema.md).

Every id (user, post, comment, notification) is an Instagram-style id (common/ids.py), so
`ORDER BY id` is time order and a cursor is an id. Usernames are stored lower-case (they are
compared without case). Times are Unix seconds (float). Counters on users and posts are
kept in the same transaction as the row they count. A change is a new migration appended to
MIGRATIONS, never an edit of an applied one.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from common.db import Migration

COMPONENT: Final = "social"
# A session's public id: 12 random bytes, 16 characters of URL-safe base64.
PUBLIC_ID_BYTES: Final = 12
PUBLIC_ID_CHARS: Final = PUBLIC_ID_BYTES * 4 // 3
USER_AGENT_CHARS_MAX: Final = 300  # a longer User-Agent is stored cut to this
ADDRESS_CHARS_MAX: Final = 64  # an IPv6 address in text is at most 45
COUNTER_KEY_CHARS_MAX: Final = 200  # longer keys are stored as their sha256

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("username", sa.String(30), nullable=False, unique=True),
    sa.Column("email", sa.String(255), nullable=True, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("full_name", sa.String(100), nullable=False),
    sa.Column("bio", sa.String(150), nullable=False),
    sa.Column("avatar_media_id", sa.BigInteger, nullable=True),
    sa.Column("is_private", sa.Boolean, nullable=False),
    sa.Column("is_verified", sa.Boolean, nullable=False),
    # Sticky: set once the author posts with follower_count >= the fan-out threshold; the
    # feed merges such an author's list at read time instead of pushing (feed/).
    sa.Column("is_celebrity", sa.Boolean, nullable=False),
    sa.Column("follower_count", sa.Integer, nullable=False),
    sa.Column("following_count", sa.Integer, nullable=False),
    sa.Column("post_count", sa.Integer, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("updated_unix_s", sa.Float, nullable=False),
    # Last feed read; fan-out skips followers inactive for longer than feed.inactive_days.
    sa.Column("active_unix_s", sa.Float, nullable=False),
)


def _session_columns_v1() -> list[sa.Column[Any]]:
    return [
        # sha256 of the bearer token: a leaked table gives no usable token.
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("created_unix_s", sa.Float, nullable=False),
        sa.Column("revoked_unix_s", sa.Float, nullable=True),
    ]


# Columns added by migration 2 (null in no row once it ran: it fills them in).
_SESSION_COLUMNS_V2: Final = (
    # What the user sees and names a session by (GET/DELETE /sessions/{id}): random, neither
    # the token nor derived from it.
    sa.Column("public_id", sa.String(PUBLIC_ID_CHARS), nullable=True),
    # Written at most once per [social] session_touch_s, so a request is not a write.
    sa.Column("last_used_unix_s", sa.Float, nullable=True),
    sa.Column("user_agent", sa.String(USER_AGENT_CHARS_MAX), nullable=True),
    sa.Column("address", sa.String(ADDRESS_CHARS_MAX), nullable=True),
)

sessions = sa.Table("sessions", metadata, *_session_columns_v1(), *_SESSION_COLUMNS_V2)

follows = sa.Table(
    "follows",
    metadata,
    sa.Column("follower_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("followee_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

follow_requests = sa.Table(
    "follow_requests",
    metadata,
    sa.Column("requester_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("target_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("request_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

blocks = sa.Table(
    "blocks",
    metadata,
    sa.Column("blocker_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("blocked_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

posts = sa.Table(
    "posts",
    metadata,
    sa.Column("post_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("author_id", sa.BigInteger, nullable=False),
    sa.Column("caption", sa.Text, nullable=False),
    sa.Column("location", sa.String(100), nullable=True),
    # processing (a media not ready yet) -> live | failed; any -> deleted
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("like_count", sa.Integer, nullable=False),
    sa.Column("comment_count", sa.Integer, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("deleted_unix_s", sa.Float, nullable=True),
)

post_media = sa.Table(
    "post_media",
    metadata,
    sa.Column("post_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("media_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("alt_text", sa.String(500), nullable=True),
)

post_users = sa.Table(
    "post_users",
    metadata,
    sa.Column("post_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), primary_key=True),  # tagged | mention
)

hashtags = sa.Table(
    "hashtags",
    metadata,
    sa.Column("tag", sa.String(100), primary_key=True),
    sa.Column("post_id", sa.BigInteger, primary_key=True, autoincrement=False),
)

likes = sa.Table(
    "likes",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("post_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

saves = sa.Table(
    "saves",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("post_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

comments = sa.Table(
    "comments",
    metadata,
    sa.Column("comment_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("post_id", sa.BigInteger, nullable=False),
    sa.Column("author_id", sa.BigInteger, nullable=False),
    sa.Column("parent_id", sa.BigInteger, nullable=True),  # one level of replies
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("reply_count", sa.Integer, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("deleted_unix_s", sa.Float, nullable=True),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),  # the recipient
    sa.Column("kind", sa.String(16), nullable=False),  # like|comment|follow|follow_request|mention
    sa.Column("actor_id", sa.BigInteger, nullable=False),
    sa.Column("post_id", sa.BigInteger, nullable=True),
    sa.Column("comment_id", sa.BigInteger, nullable=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("read_unix_s", sa.Float, nullable=True),
)

# Fixed-window rate-limit counters when no Redis is configured (social/counters.py): one row
# per (action, subject) window, shared by every API process and kept across restarts.
rate_counters = sa.Table(
    "rate_counters",
    metadata,
    sa.Column("counter_key", sa.String(COUNTER_KEY_CHARS_MAX), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("window_end_unix_s", sa.Float, nullable=False),
)

_indexes = (
    sa.Index("sessions_user", sessions.c.user_id),
    sa.Index("follows_followee", follows.c.followee_id, follows.c.follower_id),
    sa.Index("follow_requests_target", follow_requests.c.target_id, follow_requests.c.request_id),
    sa.Index("blocks_blocked", blocks.c.blocked_id, blocks.c.blocker_id),
    sa.Index("posts_author", posts.c.author_id, posts.c.post_id),
    sa.Index("post_users_user", post_users.c.user_id, post_users.c.post_id),
    sa.Index("hashtags_post", hashtags.c.post_id),
    sa.Index("likes_post", likes.c.post_id, likes.c.user_id),
    sa.Index("saves_user", saves.c.user_id, saves.c.post_id),
    sa.Index("comments_post", comments.c.post_id, comments.c.parent_id, comments.c.comment_id),
    sa.Index("notifications_user", notifications.c.user_id, notifications.c.notification_id),
)
_indexes_v2 = (
    sa.Index("sessions_public", sessions.c.public_id, unique=True),
    sa.Index("rate_counters_window", rate_counters.c.window_end_unix_s),
)

# Migration 1 as it was applied: the sessions table of version 1 (the live `sessions`
# above has the columns of migration 2 as well), the other tables unchanged since.
_sessions_v1 = sa.Table("sessions", sa.MetaData(), *_session_columns_v1())
_TABLES_V1: Final = (
    users,
    _sessions_v1,
    follows,
    follow_requests,
    blocks,
    posts,
    post_media,
    post_users,
    hashtags,
    likes,
    saves,
    comments,
    notifications,
)


async def _sessions_v2(conn: AsyncConnection) -> None:
    """Adds the sessions' public id, last use, user agent and address; existing sessions
    get a fresh public id and count as used now (an upgrade signs nobody out)."""
    for column in _SESSION_COLUMNS_V2:
        ddl = CreateColumn(column).compile(dialect=conn.dialect)
        await conn.execute(sa.text(f"ALTER TABLE sessions ADD COLUMN {ddl}"))
    now = time.time()
    digests = [r[0] for r in await conn.execute(sa.select(sessions.c.token_sha256))]
    for digest in digests:
        await conn.execute(
            sessions.update()
            .where(sessions.c.token_sha256 == digest)
            .values(public_id=new_public_id(), last_used_unix_s=now)
        )
    await conn.execute(CreateTable(rate_counters))
    for index in _indexes_v2:
        await conn.execute(CreateIndex(index))


def new_public_id() -> str:
    return secrets.token_urlsafe(PUBLIC_ID_BYTES)


MIGRATIONS: Final = (
    Migration(
        1,
        "users, sessions, graph, posts, interactions, notifications",
        [CreateTable(t) for t in _TABLES_V1] + [CreateIndex(i) for i in _indexes],
    ),
    Migration(2, "sessions: public id, last use, user agent, address; rate counters", _sessions_v2),
)
