"""The records of broker credentials handed to signed-in clients (api/realtime_routes.py,
docs/operations/mqtt.md): one row per broker client, tied to the session that asked for it,
so signing out revokes it.

The row is written before the broker is asked to make the client, and deleted only after
the broker deleted it, so a crash in between leaves a row the revocation sweep finishes,
never a broker account nobody knows of."""

from __future__ import annotations

import time
from typing import Final

import sqlalchemy as sa

from common.db import Database
from social import sessions as sessions_module
from social.config import SocialConfig
from social.messages_schema import realtime_clients
from social.schema import sessions

LOCK: Final = "realtime_clients"
SWEEP_BATCH_MAX: Final = 500


async def record(
    db: Database, *, username: str, user_id: int, token_sha256: str, per_user_max: int
) -> list[str]:
    """Records a new client; returns the user's oldest clients beyond per_user_max (to be
    revoked by the caller)."""
    c = realtime_clients.c
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            realtime_clients.insert().values(
                username=username,
                user_id=user_id,
                token_sha256=token_sha256,
                created_unix_s=time.time(),
            )
        )
        return [
            str(r[0])
            for r in await conn.execute(
                sa.select(c.username)
                .where(c.user_id == user_id)
                .order_by(c.created_unix_s.desc(), c.username)
                .offset(per_user_max)
            )
        ]


async def forget(db: Database, username: str) -> None:
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(realtime_clients.delete().where(realtime_clients.c.username == username))


async def signed_out(db: Database, config: SocialConfig) -> list[str]:
    """Clients whose session no longer authenticates: revoked, expired, idle too long or gone
    (at most SWEEP_BATCH_MAX)."""
    c, s = realtime_clients.c, sessions.c
    live = (
        sa.select(s.token_sha256)
        .where(s.token_sha256 == c.token_sha256, sessions_module.live(config, time.time()))
        .exists()
    )
    async with db.snapshot() as conn:
        return [
            str(r[0])
            for r in await conn.execute(sa.select(c.username).where(~live).limit(SWEEP_BATCH_MAX))
        ]
