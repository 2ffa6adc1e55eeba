"""Accounts: sign-up, profiles, lookups. Usernames follow seed 000's schema (VARCHAR(30),
unique) with Instagram's rules: 1 to 30 of a-z 0-9 . _, no leading or trailing dot, no two
dots in a row; compared without case (stored lower-case)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.ids import IdGenerator
from social import passwords, search_index
from social.config import SocialConfig
from social.errors import Invalid, NotVisible, SocialConflict
from social.schema import users

LOCK: Final = "social"
USERNAME_CHARS_MAX: Final = 30
EMAIL_CHARS_MAX: Final = 255
_USERNAME: Final = re.compile(r"^(?!\.)(?!.*\.\.)(?!.*\.$)[a-z0-9._]{1,30}$")
_EMAIL: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class User:
    user_id: int
    username: str
    email: str | None
    password_hash: str
    full_name: str
    bio: str
    avatar_media_id: int | None
    is_private: bool
    is_verified: bool
    is_celebrity: bool
    follower_count: int
    following_count: int
    post_count: int
    created_unix_s: float
    updated_unix_s: float
    active_unix_s: float


def _user(row: Any) -> User:
    return User(**row._mapping)


def check_username(text: Any) -> str:
    if not isinstance(text, str):
        raise Invalid("username must be a string", code="bad_username")
    name = text.strip().lower()
    if not _USERNAME.match(name):
        raise Invalid(
            "username: 1 to 30 of a-z, 0-9, '.', '_', not starting or ending with '.', no '..'",
            code="bad_username",
        )
    return name


def check_password(text: Any, config: SocialConfig) -> str:
    if not isinstance(text, str) or not (
        config.password_chars_min <= len(text) <= config.password_chars_max
    ):
        raise Invalid(
            f"password must be {config.password_chars_min} to {config.password_chars_max} "
            "characters",
            code="bad_password",
        )
    return text


def check_email(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > EMAIL_CHARS_MAX or not _EMAIL.match(text):
        raise Invalid("email is not an address", code="bad_email")
    return text.strip().lower()


async def create(
    db: Database,
    id_gen: IdGenerator,
    config: SocialConfig,
    *,
    username: Any,
    password: Any,
    email: Any = None,
    password_hash: str | None = None,
) -> User:
    """Signs up a user (password hashed with argon2id). `password_hash` skips hashing (bulk
    loads of synthetic users in tests and benchmarks)."""
    name = check_username(username)
    mail = check_email(email)
    if password_hash is None:
        password_hash = await passwords.hash_password(check_password(password, config))
    now = time.time()
    row = User(
        user_id=id_gen.next_id(),
        username=name,
        email=mail,
        password_hash=password_hash,
        full_name="",
        bio="",
        avatar_media_id=None,
        is_private=False,
        is_verified=False,
        is_celebrity=False,
        follower_count=0,
        following_count=0,
        post_count=0,
        created_unix_s=now,
        updated_unix_s=now,
        active_unix_s=now,
    )
    try:
        async with db.transaction(lock=LOCK) as conn:
            taken = await conn.execute(
                sa.select(users.c.username).where(
                    sa.or_(users.c.username == name, users.c.email == mail)
                    if mail
                    else users.c.username == name
                )
            )
            if taken.first() is not None:
                raise SocialConflict("that username or email is taken", code="taken")
            await conn.execute(users.insert().values(**_values(row)))
            await search_index.account_changed(conn, row.user_id)
    except IntegrityError:
        raise SocialConflict("that username or email is taken", code="taken") from None
    return row


def _values(user: User) -> dict[str, Any]:
    return {name: getattr(user, name) for name in User.__dataclass_fields__}


async def get(conn: AsyncConnection, user_id: int) -> User | None:
    row = (await conn.execute(sa.select(users).where(users.c.user_id == user_id))).first()
    return None if row is None else _user(row)


async def by_username(conn: AsyncConnection, username: str) -> User | None:
    row = (
        await conn.execute(sa.select(users).where(users.c.username == username.strip().lower()))
    ).first()
    return None if row is None else _user(row)


async def get_many(conn: AsyncConnection, user_ids: Iterable[int]) -> dict[int, User]:
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = await conn.execute(sa.select(users).where(users.c.user_id.in_(wanted)))
    return {r.user_id: _user(r) for r in rows}


async def require(conn: AsyncConnection, user_id: int) -> User:
    user = await get(conn, user_id)
    if user is None:
        raise NotVisible("no such user")
    return user


def profile_changes(body: dict[str, Any], config: SocialConfig) -> dict[str, Any]:
    """The validated columns of a PATCH of one's profile (avatar handled by the caller)."""
    changes: dict[str, Any] = {}
    for name, limit in (("full_name", config.full_name_chars_max), ("bio", config.bio_chars_max)):
        if name in body:
            value = body[name]
            if not isinstance(value, str) or len(value) > limit:
                raise Invalid(f"{name} must be a string of at most {limit} characters")
            changes[name] = value
    if "is_private" in body:
        if not isinstance(body["is_private"], bool):
            raise Invalid("is_private must be true or false")
        changes["is_private"] = body["is_private"]
    unknown = set(body) - {"full_name", "bio", "is_private", "avatar_media_id"}
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    return changes


async def touch_active(
    db: Database, user_id: int, *, now: float, every_s: float
) -> tuple[float | None, bool]:
    """Records a feed read (at most once per `every_s`); returns the user's activity stamp
    (None: no such user) and whether the user had been inactive for longer than `every_s`
    (and is stamped `now`). A read first: most calls write nothing, and a feed read must
    not queue behind the social write lock."""
    async with db.snapshot() as conn:
        active = (
            await conn.execute(sa.select(users.c.active_unix_s).where(users.c.user_id == user_id))
        ).scalar_one_or_none()
    if active is None or active >= now - every_s:
        return active, False
    async with db.transaction(lock=LOCK) as conn:
        result = await conn.execute(
            users.update()
            .where(users.c.user_id == user_id, users.c.active_unix_s < now - every_s)
            .values(active_unix_s=now)
        )
    return now, bool(result.rowcount)


async def by_username_prefix(conn: AsyncConnection, prefix: str, *, limit: int) -> list[User]:
    """Users whose username starts with `prefix` (as usernames are written; anything else
    finds nobody), the exact match first, then by username."""
    name = prefix.strip().lower()
    if not name or len(name) > USERNAME_CHARS_MAX or not re.fullmatch(r"[a-z0-9._]+", name):
        return []
    # The prefix holds no LIKE wildcard but `_`, which is escaped.
    pattern = name.replace("_", r"\_") + "%"
    rows = await conn.execute(
        sa.select(users)
        .where(users.c.username.like(pattern, escape="\\"))
        .order_by((users.c.username != name), users.c.username)
        .limit(limit)
    )
    return [_user(r) for r in rows]
