"""Who is asking: `Authorization: Bearer <token>` of a session (POST /api/v1/sessions).
Tokens are checked against their sha256 in the sessions table (social/sessions.py)."""

from __future__ import annotations

from aiohttp import web

from api.errors import NotAuthenticated


def bearer(request: web.Request) -> str:
    """The request's bearer token; raises NotAuthenticated when there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise NotAuthenticated("an Authorization: Bearer token is required (POST /api/v1/sessions)")
    if len(given) > 200:
        raise NotAuthenticated("the token is not valid")
    return given
