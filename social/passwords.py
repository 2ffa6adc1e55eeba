"""Password hashing with argon2id (argon2-cffi, its RFC 9106 low-memory profile). Hashing
costs tens of milliseconds of CPU by design: callers run it in an executor."""

from __future__ import annotations

import asyncio
import functools
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER: Final = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4 (argon2-cffi's default)


@functools.cache
def _dummy() -> str:
    """A verify against this hash when the user does not exist takes as long as a real one,
    so response times do not tell which usernames exist. Made on first use: at import it
    would cost every `pinhole` process an argon2 hash (64 MiB, ~0.1 s of CPU)."""
    return _HASHER.hash("pinhole-no-such-user")


def _bytes(password: str) -> bytes:
    # UTF-8, as argon2-cffi encodes a str; a lone surrogate (JSON allows "\ud800") is
    # kept as its bytes rather than failing the encoding.
    return password.encode("utf-8", "surrogatepass")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, _bytes(password))


async def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored` (None: no such user, checked against a dummy)."""

    def check() -> bool:
        try:
            return _HASHER.verify(stored or _dummy(), _bytes(password)) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)
