"""schemathesis hooks for tests/api/test_schemathesis.py (loaded in the `st` process through
SCHEMATHESIS_HOOKS): bearer tokens for the fuzzed API.

Two accounts, so that signing out never logs the run out: the operations that end sessions
(DELETE /api/v1/sessions/current, /sessions, /sessions/{id}; a password change ends the
other sessions) get a fresh session of the second account for every call, every other
operation a session of the first, opened once and opened again whenever an answer is 401
(the token was revoked after all). The accounts come from PINHOLE_ST_* environment
variables.
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis

SIGN_IN_TIMEOUT_S = 30.0
# The operations without security: they get no token.
_OPEN_POSTS = r"^/api/v1/(accounts|sessions)$"
_OPEN_GETS = r"^/(healthz|api/openapi\.json)$"
# The operations that end sessions (the caller's, or every other one of the account).
_ENDS_SESSIONS = r"^(DELETE /api/v1/sessions(/.*)?|POST /api/v1/accounts/me/password)$"


def _sign_in(prefix: str) -> str:
    """A new session of the account named by PINHOLE_ST_<prefix>_USER / _PASSWORD."""
    creds = {
        "username": os.environ[f"PINHOLE_ST_{prefix}_USER"],
        "password": os.environ[f"PINHOLE_ST_{prefix}_PASSWORD"],
    }
    answer = requests.post(
        os.environ["PINHOLE_ST_API"] + "/api/v1/sessions", json=creds, timeout=SIGN_IN_TIMEOUT_S
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


def _bearer(case: Any, token: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.auth(refresh_interval=None).apply_to(name_regex=_ENDS_SESSIONS)
class SignOutAuth:
    """The second account, a session per call that ends sessions."""

    def get(self, case: Any, ctx: Any) -> str:
        return _sign_in("SIGN_OUT")

    def set(self, case: Any, data: str, ctx: Any) -> None:
        _bearer(case, data)


@(
    schemathesis.auth(refresh_interval=3600, retry_on=[401])
    .skip_for(method="POST", path_regex=_OPEN_POSTS)
    .skip_for(method="GET", path_regex=_OPEN_GETS)
    .skip_for(name_regex=_ENDS_SESSIONS)
    .skip_for(method="OPTIONS")
)
class MainAuth:
    """The first account; signs in again after a 401."""

    def get(self, case: Any, ctx: Any) -> str:
        return _sign_in("MAIN")

    def set(self, case: Any, data: str, ctx: Any) -> None:
        _bearer(case, data)


# tus PATCH bodies are raw bytes under their own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
