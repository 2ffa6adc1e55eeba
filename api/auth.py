"""Who is asking: `Authorization: Bearer <token>` of a session (POST /api/v1/sessions).
Tokens are checked against their sha256 in the sessions table (social/sessions.py)."""

from __future__ import annotations

from aiohttp import web

from api.errors import Unauthorized


def bearer(request: web.Request) -> str:
    """The request's bearer token; raises Unauthorized when there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("an Authorization: Bearer token is required (POST /api/v1/sessions)")
    if len(given) > 200:
        raise Unauthorized("the token is not valid")
    return given
