"""`GET /api/v1/usernames/{username}`: a profile found by its username (docs/api/social.md),
for links made from `@mentions` and for finding someone to follow. The same document and
the same 404s as `GET /api/v1/users/{user_id}`."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from api.context import CONTEXT
from api.errors import NoSuchResource
from api.social_docs import avatars, user_document
from social import accounts, graph
from social.errors import Invalid

routes = web.RouteTableDef()


@routes.get("/api/v1/usernames/{username}")
async def get_by_username(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    try:
        username = accounts.check_username(request.match_info["username"])
    except Invalid:
        raise NoSuchResource("no such user") from None  # no such name can exist
    async with ctx.db.snapshot() as conn:
        user = await accounts.by_username(conn, username)
        if user is None:
            raise NoSuchResource("no such user")
        rel = await graph.relationship(conn, viewer, user.user_id)
    if rel.blocked_by or rel.blocking:
        raise NoSuchResource("no such user")
    doc = user_document(user, avatar=(await avatars(ctx, [user])).get(user.user_id))
    doc["relationship"] = {
        "following": rel.following,
        "followed_by": rel.followed_by,
        "requested": rel.requested,
    }
    return web.json_response(doc)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


OPENAPI_PATHS: Final[dict[str, Any]] = {
    "/api/v1/usernames/{username}": {
        "get": {
            "summary": "A profile found by its username, and your relationship to it",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "done",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/User"}}
                    },
                },
                "401": _error("no bearer token, or a revoked one"),
                "404": _error("no such user, or a block either way"),
            },
        }
    },
}
