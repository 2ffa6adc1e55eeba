"""The local cluster's demo account: made on first use through the API with a random
password kept in <root>/api/demo-account.json (mode 0600); each call signs in and writes
the session token to <root>/api/demo.token for curl (Authorization: Bearer ...)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Final

import aiohttp

USERNAME: Final = "demo"
ACCOUNT_FILE: Final = "demo-account.json"
TOKEN_FILE: Final = "demo.token"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def demo_password(root: Path) -> str | None:
    """The demo account's password, once `pinhole up --demo` has made the account."""
    try:
        return str(json.loads((root / "api" / ACCOUNT_FILE).read_text())["password"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


async def demo_token(api_url: str, root: Path, *, username: str = USERNAME) -> str:
    """A session token of the demo account (signed up when it does not exist yet)."""
    account = root / "api" / ACCOUNT_FILE
    try:
        creds = json.loads(account.read_text())
    except (FileNotFoundError, ValueError):
        creds = {"username": username, "password": secrets.token_urlsafe(18)}
        _write_private(account, json.dumps(creds))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api_url}/api/v1/accounts", json=creds) as r:
            if r.status not in (201, 409):
                raise RuntimeError(f"demo sign-up failed: {r.status} {await r.text()}")
        async with http.post(f"{api_url}/api/v1/sessions", json=creds) as r:
            if r.status != 201:
                raise RuntimeError(f"demo sign-in failed: {r.status} {await r.text()}")
            token = str((await r.json())["token"])
    _write_private(root / "api" / TOKEN_FILE, token + "\n")
    return token
