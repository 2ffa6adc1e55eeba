"""Password checks under the failed sign-in throttles: signing in, and the current password
of a password change (which a stolen session could otherwise use to guess it).

Three fixed windows count failures (named in SocialConfig):
- per client address, an hour (`sign_in_failures_per_address_max`): bounds what one
  address guesses over all accounts;
- per account and client address, 15 minutes (`sign_in_failures_per_account_address_max`):
  bounds one address guessing one account, and locks out nobody else;
- per account, 15 minutes (`sign_in_failures_per_account_max`, higher), counted only for
  addresses the account has not signed in from within session_days_max: bounds guessing
  spread over many addresses, while its owner, signing in from an address they used
  before, is never locked out by strangers.

Every attempt is counted before the password is checked, so concurrent guesses cannot
overtake the limit, and an attempt that turns out right is refunded: successes never count,
and never reset the failures counted so far. Beyond a limit the answer is 429 whatever the
password, so the limits bound guessing. Accounts are keyed by the username as given
(lower-cased), existing or not, so the throttles do not tell which usernames exist.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from common.db import Database
from social import accounts, passwords, sessions
from social.accounts import User
from social.config import DAY_S, SocialConfig
from social.counters import Counters
from social.errors import AuthFailed, Forbidden, Invalid, RateLimited, SocialConflict, SocialError
from social.ratelimit import HOUR_S, MINUTE_S, Rate, refused
from social.schema import users

ADDRESS_WINDOW_S: Final = HOUR_S
ACCOUNT_WINDOW_S: Final = 15 * MINUTE_S
_USERNAME: Final = re.compile(r"^[a-z0-9._]{1,30}$")


@dataclass(frozen=True, slots=True)
class _Limit:
    key: str
    limit: int
    window_s: int


def _limits(
    config: SocialConfig, username: str | None, address: str, *, known: bool
) -> list[_Limit]:
    """The per-address limit first (its figures go on a successful answer)."""
    out = [
        _Limit(
            f"sign_in_address:{address}", config.sign_in_failures_per_address_max, ADDRESS_WINDOW_S
        )
    ]
    if username is not None:
        out.append(
            _Limit(
                f"sign_in_account_address:{username}:{address}",
                config.sign_in_failures_per_account_address_max,
                ACCOUNT_WINDOW_S,
            )
        )
        if not known:
            out.append(
                _Limit(
                    f"sign_in_account:{username}",
                    config.sign_in_failures_per_account_max,
                    ACCOUNT_WINDOW_S,
                )
            )
    return out


async def _guarded(
    counters: Counters,
    limits: list[_Limit],
    check: Callable[[], Awaitable[bool]],
    wrong: SocialError,
) -> Rate:
    """Counts the attempt in every window, refuses it (429, the longest wait) beyond any
    limit, runs `check`, raises `wrong` when it fails, refunds the attempt when it passes;
    returns the per-address rate after the refund."""
    refusal: RateLimited | None = None
    counts = []
    for limit in limits:
        got = await counters.incr(limit.key, window_s=limit.window_s)
        counts.append(got)
        if got.count > limit.limit and (refusal is None or got.reset_s > refusal.reset_s):
            refusal = refused("failed sign-ins", limit.limit, limit.window_s, got.reset_s)
    if refusal is not None:
        raise refusal
    if not await check():
        raise wrong
    for limit in limits:
        await counters.refund(limit.key)
    first = limits[0]
    return Rate(first.limit, first.limit - (counts[0].count - 1), counts[0].reset_s)


def _account_key(username: str) -> str | None:
    """The username as the throttles key it; None when it cannot name an account."""
    name = username.strip().lower()
    return name if _USERNAME.match(name) else None


async def _known(db: Database, config: SocialConfig, user: User | None, address: str) -> bool:
    if user is None:
        return False
    since = time.time() - config.session_days_max * DAY_S
    async with db.snapshot() as conn:
        return await sessions.seen_from(conn, user.user_id, address, since=since)


async def sign_in(
    db: Database,
    counters: Counters,
    config: SocialConfig,
    *,
    username: str,
    password: str,
    address: str,
) -> tuple[User, Rate]:
    """The user whose username and password these are, and the per-address rate; raises
    RateLimited (429) beyond a throttle, AuthFailed (401 bad_credentials) otherwise."""
    name = _account_key(username)
    user = None
    if name is not None:
        async with db.snapshot() as conn:
            user = await accounts.by_username(conn, name)
    limits = _limits(config, name, address, known=await _known(db, config, user, address))

    async def check() -> bool:
        return await passwords.verify_password(user.password_hash if user else None, password)

    wrong = AuthFailed("wrong username or password", code="bad_credentials")
    rate = await _guarded(counters, limits, check, wrong)
    assert user is not None  # a password matched
    return user, rate


async def change_password(
    db: Database,
    counters: Counters,
    config: SocialConfig,
    *,
    user_id: int,
    token: str,
    body: dict[str, Any],
    address: str,
) -> tuple[int, Rate]:
    """Sets `body`'s new_password (the sign-up rules: 400 bad_password) after checking its
    current_password under the sign-in throttles (403 wrong_password, 429), and revokes
    every other session of the user than `token`'s; returns how many, and the per-address
    rate. 409 when the password changed meanwhile."""
    unknown = set(body) - {"current_password", "new_password"}
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    new_password = accounts.check_password(body.get("new_password"), config)
    current = body.get("current_password")
    if not isinstance(current, str):
        raise Invalid("current_password must be a string")
    async with db.snapshot() as conn:
        user = await accounts.require(conn, user_id)
    limits = _limits(config, user.username, address, known=await _known(db, config, user, address))

    async def check() -> bool:
        if len(current) > config.password_chars_max:  # no password this long was accepted
            return False
        return await passwords.verify_password(user.password_hash, current)

    wrong = Forbidden("the current password is wrong", code="wrong_password")
    rate = await _guarded(counters, limits, check, wrong)
    new_hash = await passwords.hash_password(new_password)
    async with db.transaction(lock=accounts.LOCK) as conn:
        changed = await conn.execute(
            users.update()
            .where(users.c.user_id == user_id, users.c.password_hash == user.password_hash)
            .values(password_hash=new_hash, updated_unix_s=time.time())
        )
        if not changed.rowcount:
            raise SocialConflict(
                "the password was changed meanwhile; try again", code="password_changed"
            )
        return await sessions.revoke_all(conn, user_id, keep_token=token), rate
