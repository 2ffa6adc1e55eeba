"""Named leases in the database: at most one directory process holds a lease at a time
(until it expires), so each background loop runs in one process at a time.

acquire() both takes a free or expired lease and renews one already held; it runs in a
write transaction, so two processes racing for the same lease serialize and exactly one
wins. Expiry uses each process's wall clock: directory hosts need synchronized clocks
(NTP) with skew well under lease_s.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from common.db import Database
from directory import schema

LOCK = "directory"


async def acquire(db: Database, name: str, holder: str, lease_s: float) -> bool:
    """True when `holder` holds the lease `name` for at least the next `lease_s / 2`
    seconds (renewed to `lease_s` when less remains)."""
    t = schema.leases
    # A read first: most calls are a holder with time left or a process that does not hold
    # the lease, and neither needs the database's write lock.
    async with db.snapshot() as conn:
        now = time.time()
        seen = (await conn.execute(sa.select(t).where(t.c.name == name))).first()
    if seen is not None and seen.expires_unix_s > now:
        if seen.holder != holder:
            return False
        if seen.expires_unix_s - now > lease_s / 2:
            return True
    async with db.transaction(lock=LOCK) as conn:
        now = time.time()
        row = (await conn.execute(sa.select(t).where(t.c.name == name))).first()
        if row is None:
            await conn.execute(
                t.insert().values(name=name, holder=holder, expires_unix_s=now + lease_s)
            )
            return True
        if row.holder != holder and row.expires_unix_s > now:
            return False
        await conn.execute(
            t.update().where(t.c.name == name).values(holder=holder, expires_unix_s=now + lease_s)
        )
        return True


async def release(db: Database, name: str, holder: str) -> None:
    """Gives the lease up at once (a clean shutdown), if `holder` holds it."""
    t = schema.leases
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(t.delete().where(t.c.name == name, t.c.holder == holder))


async def holders(db: Database) -> dict[str, tuple[str, float]]:
    """lease name -> (holder, expires_unix_s)."""
    t = schema.leases
    async with db.snapshot() as conn:
        rows = await conn.execute(sa.select(t))
        return {r.name: (r.holder, float(r.expires_unix_s)) for r in rows}
