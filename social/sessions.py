"""Sessions: bearer tokens of 32 random bytes, stored as their sha256 (a leaked table
yields no usable token), revocable one by one or all at once. A session is live while it is
not revoked, younger than session_days_max days and used within session_idle_days_max
days; its last use is written at most once per session_touch_s, so most requests only read.
A user holds at most sessions_per_user_max sessions; signing in beyond it revokes the
oldest. Each session has a public id (random, unrelated to the token) by which its user
lists and revokes it, and keeps the user agent and client address of its sign-in."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from social.config import DAY_S, SocialConfig
from social.errors import AuthFailed
from social.oauth_schema import oauth_tokens
from social.schema import (
    ADDRESS_CHARS_MAX,
    PUBLIC_ID_CHARS,
    USER_AGENT_CHARS_MAX,
    new_public_id,
    sessions,
    users,
)

LOCK: Final = "social"
# Last-use stamps serialize only among themselves (on PostgreSQL), not with social writes.
TOUCH_LOCK: Final = "session_touch"
TOKEN_BYTES: Final = 32
_PUBLIC_ID: Final = re.compile(rf"[A-Za-z0-9_-]{{{PUBLIC_ID_CHARS}}}")


@dataclass(frozen=True, slots=True)
class _AuthRow:
    user_id: int
    last_used_unix_s: float
    scopes: str | None


@dataclass(frozen=True, slots=True)
class Session:
    public_id: str
    created_unix_s: float
    last_used_unix_s: float
    user_agent: str
    address: str
    current: bool  # the session of the request that asked


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_public_id(text: str) -> bool:
    return _PUBLIC_ID.fullmatch(text) is not None


def _text(value: str, chars_max: int) -> str:
    """Header text as stored: cut to the column, undecodable bytes replaced."""
    return value[:chars_max].encode("utf-8", "replace").decode("utf-8")


def live(config: SocialConfig, now: float) -> sa.ColumnElement[bool]:
    """The sessions that still authenticate: not revoked, not too old, not idle too long."""
    return _live(config, now)


def _live(config: SocialConfig, now: float) -> sa.ColumnElement[bool]:
    s = sessions.c
    return sa.and_(
        s.revoked_unix_s.is_(None),
        s.created_unix_s >= now - config.session_days_max * DAY_S,
        s.last_used_unix_s >= now - config.session_idle_days_max * DAY_S,
    )


async def open_session(
    db: Database, user_id: int, *, per_user_max: int, user_agent: str, address: str
) -> str:
    """A new session's token (the only time it exists in clear)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = time.time()
    async with db.transaction(lock=LOCK) as conn:
        live = (
            await conn.execute(
                sa.select(sessions.c.token_sha256)
                .where(sessions.c.user_id == user_id, sessions.c.revoked_unix_s.is_(None))
                .order_by(sessions.c.created_unix_s.desc())
            )
        ).all()
        for (old,) in live[per_user_max - 1 :]:
            await conn.execute(
                sessions.update().where(sessions.c.token_sha256 == old).values(revoked_unix_s=now)
            )
        await conn.execute(
            sessions.insert().values(
                token_sha256=digest(token),
                user_id=user_id,
                created_unix_s=now,
                public_id=new_public_id(),
                last_used_unix_s=now,
                user_agent=_text(user_agent, USER_AGENT_CHARS_MAX),
                address=_text(address, ADDRESS_CHARS_MAX),
            )
        )
    return token


async def authenticate(db: Database, token: str, config: SocialConfig) -> int:
    """The user of a live session; raises AuthFailed (see authenticate_scoped)."""
    user_id, _ = await authenticate_scoped(db, token, config)
    return user_id


# The session check of every authenticated request, built once: its bounds are parameters
# (`_live` written with binds). On a SQLite file it runs as plain SQL on the quick reader
# (common/quickread.py): the same statement, compiled once by SQLAlchemy for that dialect.
_AUTH_QUERY: Final = (
    sa.select(sessions.c.user_id, sessions.c.last_used_unix_s, oauth_tokens.c.scopes)
    .select_from(
        sessions.join(users, users.c.user_id == sessions.c.user_id).outerjoin(
            oauth_tokens, oauth_tokens.c.token_sha256 == sessions.c.token_sha256
        )
    )
    .where(
        sessions.c.token_sha256 == sa.bindparam("token_sha256"),
        sessions.c.revoked_unix_s.is_(None),
        sessions.c.created_unix_s >= sa.bindparam("created_min"),
        sessions.c.last_used_unix_s >= sa.bindparam("used_min"),
    )
)
_AUTH_SQLITE: Final = str(_AUTH_QUERY.compile(dialect=sqlite_dialect(paramstyle="named")))


async def authenticate_scoped(
    db: Database, token: str, config: SocialConfig
) -> tuple[int, frozenset[str] | None]:
    """The user of a live session and, when the session is an OAuth access token
    (social/oauth.py), its scopes (None: a pinhole session, every scope); raises
    AuthFailed. Records the use when the last one recorded is older than session_touch_s.
    One query: the scopes are read beside the session."""
    now = time.time()
    bounds = {
        "token_sha256": digest(token),
        "created_min": now - config.session_days_max * DAY_S,
        "used_min": now - config.session_idle_days_max * DAY_S,
    }
    row: Any
    if db.quick is not None:
        row = await db.quick.run(lambda c: c.execute(_AUTH_SQLITE, bounds).fetchone())
        if row is not None:
            row = _AuthRow(*row)
    else:
        async with db.snapshot() as conn:
            row = (await conn.execute(_AUTH_QUERY, bounds)).first()
    if row is None:
        raise AuthFailed("the token is not valid (signed out, expired or never issued)")
    if row.last_used_unix_s < now - config.session_touch_s:
        async with db.transaction(lock=TOUCH_LOCK) as conn:
            await conn.execute(
                sessions.update()
                .where(
                    sessions.c.token_sha256 == digest(token),
                    sessions.c.last_used_unix_s < now - config.session_touch_s,
                )
                .values(last_used_unix_s=now)
            )
    scopes = None if row.scopes is None else frozenset(row.scopes.split())
    return int(row.user_id), scopes


async def live_sessions(
    db: Database, user_id: int, config: SocialConfig, *, token: str
) -> list[Session]:
    """The user's live sessions, newest first; `token` marks the current one."""
    now = time.time()
    s = sessions.c
    async with db.snapshot() as conn:
        rows = await conn.execute(
            sa.select(sessions)
            .where(s.user_id == user_id, _live(config, now))
            .order_by(s.created_unix_s.desc())
        )
        return [
            Session(
                public_id=r.public_id,
                created_unix_s=r.created_unix_s,
                last_used_unix_s=r.last_used_unix_s,
                user_agent=r.user_agent or "",
                address=r.address or "",
                current=r.token_sha256 == digest(token),
            )
            for r in rows
        ]


async def revoke(db: Database, token: str) -> bool:
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            sessions.update()
            .where(sessions.c.token_sha256 == digest(token), sessions.c.revoked_unix_s.is_(None))
            .values(revoked_unix_s=time.time())
        )
    return bool(result.rowcount)


async def revoke_by_id(db: Database, user_id: int, public_id: str, config: SocialConfig) -> bool:
    """Revokes one live session of the user by its public id; False when the user has no
    such live session (someone else's id is no different from an unknown one)."""
    now = time.time()
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            sessions.update()
            .where(
                sessions.c.user_id == user_id,
                sessions.c.public_id == public_id,
                _live(config, now),
            )
            .values(revoked_unix_s=now)
        )
    return bool(result.rowcount)


async def revoke_all(conn: AsyncConnection, user_id: int, *, keep_token: str | None) -> int:
    """Revokes every unrevoked session of the user but `keep_token`'s (inside the caller's
    transaction); returns how many."""
    query = sessions.update().where(
        sessions.c.user_id == user_id, sessions.c.revoked_unix_s.is_(None)
    )
    if keep_token is not None:
        query = query.where(sessions.c.token_sha256 != digest(keep_token))
    result = await conn.execute(query.values(revoked_unix_s=time.time()))
    return int(result.rowcount)


async def sign_out_everywhere(db: Database, user_id: int) -> int:
    """Revokes every unrevoked session of the user, the caller's too; returns how many."""
    async with db.transaction(lock=LOCK) as conn:
        return await revoke_all(conn, user_id, keep_token=None)


async def seen_from(conn: AsyncConnection, user_id: int, address: str, *, since: float) -> bool:
    """True when the user signed in from `address` since `since` (Unix s), whether or not
    that session still lives."""
    s = sessions.c
    row = await conn.execute(
        sa.select(s.token_sha256)
        .where(s.user_id == user_id, s.address == address, s.created_unix_s >= since)
        .limit(1)
    )
    return row.first() is not None
