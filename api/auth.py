"""Who is asking. Until accounts exist (the social issue), one local development token
stands for user DEV_USER_ID: `Authorization: Bearer <token>`; compared in constant time."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from aiohttp import web

from api.errors import Unauthorized

DEV_USER_ID: Final = 1
TOKEN_FILE: Final = "dev.token"


def load_or_make_dev_token(data_dir: Path, configured: str) -> str:
    """The configured token, else the one kept in <data_dir>/dev.token (made on first use,
    mode 0600). Blocking: call at start-up."""
    if configured:
        return configured
    path = data_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return token


def user_id(request: web.Request, token: str) -> int:
    """The authenticated user of the request; raises Unauthorized."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("an Authorization: Bearer token is required")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("the token is not valid")
    return DEV_USER_ID
