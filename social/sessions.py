"""Sessions: bearer tokens of 32 random bytes, stored as their sha256 (a leaked table
yields no usable token), revocable one by one, valid for session_days_max days from the
sign-in. A user holds at most sessions_per_user_max sessions; signing in beyond it revokes
the oldest."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Final

import sqlalchemy as sa

from common.db import Database
from social.errors import AuthFailed
from social.schema import sessions, users

LOCK: Final = "social"
TOKEN_BYTES: Final = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(db: Database, user_id: int, *, per_user_max: int) -> str:
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
                token_sha256=_digest(token), user_id=user_id, created_unix_s=now
            )
        )
    return token


DAY_S: Final = 86400.0


async def authenticate(db: Database, token: str, *, days_max: float) -> int:
    """The user of a live session (neither revoked nor older than days_max); raises
    AuthFailed."""
    oldest = time.time() - days_max * DAY_S
    async with db.snapshot() as conn:
        row = (
            await conn.execute(
                sa.select(sessions.c.user_id)
                .select_from(sessions.join(users, users.c.user_id == sessions.c.user_id))
                .where(
                    sessions.c.token_sha256 == _digest(token),
                    sessions.c.revoked_unix_s.is_(None),
                    sessions.c.created_unix_s >= oldest,
                )
            )
        ).first()
    if row is None:
        raise AuthFailed("the token is not valid (signed out, expired or never issued)")
    return int(row[0])


async def revoke(db: Database, token: str) -> bool:
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            sessions.update()
            .where(sessions.c.token_sha256 == _digest(token), sessions.c.revoked_unix_s.is_(None))
            .values(revoked_unix_s=time.time())
        )
    return bool(result.rowcount)
