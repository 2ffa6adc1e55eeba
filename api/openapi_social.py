"""The OpenAPI description of the social routes: accounts, sessions, users, the follow
graph, posts, likes, saves, comments, the feed and notifications (docs/api/social.md)."""

from __future__ import annotations

from typing import Any, Final

from feed.config import FeedConfig
from social.config import SocialConfig
from social.schema import PUBLIC_ID_CHARS

_ERROR_REF: Final = {"$ref": "#/components/schemas/Error"}
_ID: Final = {"type": "string", "description": "64-bit id as a decimal string"}
_RATE: Final = {
    "X-RateLimit-Limit": {"schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "seconds"},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


def _page(limit_max: int) -> list[dict[str, Any]]:
    return [
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": limit_max},
        },
    ]


_PAGE: Final = _page(SocialConfig().page_size_max)


def _op(
    summary: str,
    *,
    ok: str = "200",
    ok_description: str = "done",
    auth: bool = True,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    errors: dict[str, str] | None = None,
    rate_limited: bool = False,
    schema: str | None = None,
    required: list[str] | None = None,
    closed: bool = False,
) -> dict[str, Any]:
    """One operation. `body`: the JSON body's properties, `required` its required fields,
    `closed` when other fields are refused (400). The answers every route of its shape can
    give are added: 400 for a query or a body, 404 for an id in the path, 413 for a body."""
    response: dict[str, Any] = {"description": ok_description}
    if schema:
        response["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
        }
    if rate_limited:
        response["headers"] = _RATE
    responses: dict[str, Any] = {ok: response}
    for code, text in (errors or {}).items():
        responses[code] = _error(text)
    where = {p["in"] for p in parameters or []}
    if "query" in where or body is not None:
        responses.setdefault("400", _error("bad input (the JSON error body names it)"))
    if "path" in where:
        responses.setdefault("404", _error("no such id (a malformed one included)"))
    if body is not None:
        responses["413"] = _error("body over [api] json_body_bytes_max")
    if auth:
        responses["401"] = _error("no bearer token, or a revoked one")
    if rate_limited:
        responses["429"] = {**_error("over the rate limit (Retry-After)"), "headers": _RATE}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if auth:
        op["security"] = [{"bearer": []}]
    if body is not None:
        body_schema: dict[str, Any] = {"type": "object", "properties": body}
        if required:
            body_schema["required"] = required
        if closed:
            body_schema["additionalProperties"] = False
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        }
    if parameters:
        op["parameters"] = parameters
    return op


_STR: Final = {"type": "string"}
_BAD: Final = {"400": "bad input (JSON error body names the field)"}
_NF: Final = {"404": "no such user or post, or not visible to you"}
_DEFAULTS: Final = SocialConfig()
_PASSWORD: Final = {
    "type": "string",
    "minLength": _DEFAULTS.password_chars_min,
    "maxLength": _DEFAULTS.password_chars_max,
}
_SESSION_ID: Final = {
    "type": "string",
    "pattern": f"^[A-Za-z0-9_-]{{{PUBLIC_ID_CHARS}}}$",
    "description": "a session's public id (GET /api/v1/sessions); neither its token nor "
    "derived from it",
}
_IN_USE: Final = "media_in_use: a media belongs to one place (a post, or a profile)"

# A new post's optional place (social/places.py; docs/api/search.md).
_PLACE: Final = {
    "oneOf": [
        {
            "type": "object",
            "required": ["place_id"],
            "properties": {"place_id": _ID},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["name", "latitude", "longitude"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
            },
            "additionalProperties": False,
        },
    ],
    "description": "a place by id, or by name and coordinates (rounded to "
    "[search] place_coordinate_decimals; the same folded name and rounded coordinates "
    "reuse one place)",
}


PATHS: Final[dict[str, Any]] = {
    "/api/v1/accounts": {
        "post": _op(
            "Sign up (password hashed with argon2id)",
            ok="201",
            auth=False,
            body={"username": _STR, "password": _STR, "email": _STR},
            errors={**_BAD, "409": "username or email taken"},
            rate_limited=True,
            schema="User",
        )
    },
    "/api/v1/sessions": {
        "post": _op(
            "Sign in: a bearer token (stored hashed, revocable); failed sign-ins are "
            "throttled per client address, per account and address, and per account",
            ok="201",
            ok_description="{token, user_id}",
            auth=False,
            body={"username": _STR, "password": _STR},
            required=["username", "password"],
            errors={**_BAD, "401": "bad_credentials: wrong username or password"},
            rate_limited=True,
            schema="SessionToken",
        ),
        "get": _op("Your live sessions, newest first", schema="SessionList"),
        "delete": _op("Sign out everywhere: revoke every session of yours, this one too", ok="204"),
    },
    "/api/v1/sessions/current": {"delete": _op("Sign out: revoke this token", ok="204")},
    "/api/v1/sessions/{session_id}": {
        "delete": _op(
            "Revoke one of your sessions",
            ok="204",
            parameters=[
                {
                    "name": "session_id",
                    "in": "path",
                    "required": True,
                    "schema": _STR,
                    "description": _SESSION_ID["description"],
                }
            ],
            errors={"404": "no live session of yours has that id"},
        )
    },
    "/api/v1/accounts/me": {
        "get": _op("Your account", schema="User"),
        "patch": _op(
            "Edit your profile",
            body={
                "full_name": {"type": "string", "maxLength": _DEFAULTS.full_name_chars_max},
                "bio": {"type": "string", "maxLength": _DEFAULTS.bio_chars_max},
                "is_private": {"type": "boolean"},
                "avatar_media_id": {**_ID, "type": ["string", "null"]},
            },
            closed=True,
            errors={**_BAD, "409": f"{_IN_USE}: that media is in a post"},
            schema="User",
        ),
    },
    "/api/v1/accounts/me/password": {
        "post": _op(
            "Change your password; every other session of yours is revoked. A wrong current "
            "password counts as a failed sign-in",
            body={"current_password": _STR, "new_password": _PASSWORD},
            required=["current_password", "new_password"],
            closed=True,
            errors={
                **_BAD,
                "403": "wrong_password: the current password is wrong",
                "409": "password_changed: it changed meanwhile; try again",
            },
            rate_limited=True,
            schema="PasswordChanged",
        )
    },
    "/api/v1/users/{user_id}": {
        "get": _op(
            "A profile and your relationship to it",
            parameters=[_path("user_id")],
            errors=_NF,
            schema="User",
        )
    },
    "/api/v1/users/{user_id}/posts": {
        "get": _op(
            "The profile grid, newest first",
            parameters=[_path("user_id"), *_PAGE],
            errors={**_NF, "403": "private account you do not follow"},
        )
    },
    "/api/v1/users/{user_id}/followers": {
        "get": _op(
            "Followers",
            parameters=[_path("user_id"), *_PAGE],
            errors={**_NF, "403": "private account you do not follow"},
        )
    },
    "/api/v1/users/{user_id}/following": {
        "get": _op(
            "Accounts followed",
            parameters=[_path("user_id"), *_PAGE],
            errors={**_NF, "403": "private account you do not follow"},
        )
    },
    "/api/v1/follows": {
        "post": _op(
            "Follow (state following, or requested for a private account)",
            ok="201",
            body={"followee_id": _ID},
            errors={**_BAD, **_NF},
            rate_limited=True,
        )
    },
    "/api/v1/follows/{user_id}": {
        "delete": _op(
            "Unfollow, or withdraw a request; the next feed read no longer shows them",
            ok="204",
            parameters=[_path("user_id")],
        )
    },
    "/api/v1/follow_requests": {
        "get": _op(
            "Follow requests to you, newest first (with a Mastodon OAuth token: Mastodon's "
            "list of Accounts, docs/api/mastodon.md)",
            parameters=_PAGE,
        )
    },
    "/api/v1/follow_requests/{user_id}/approve": {
        "post": _op("Approve a request", ok="204", parameters=[_path("user_id")], errors=_NF)
    },
    "/api/v1/follow_requests/{user_id}/deny": {
        "post": _op("Deny a request", ok="204", parameters=[_path("user_id")], errors=_NF)
    },
    "/api/v1/blocks": {
        "post": _op(
            "Block a user (follows both ways end)",
            ok="201",
            body={"user_id": _ID},
            errors={**_BAD, **_NF},
        )
    },
    "/api/v1/blocks/{user_id}": {"delete": _op("Unblock", ok="204", parameters=[_path("user_id")])},
    "/api/v1/posts": {
        "post": _op(
            "Post 1 to 10 of your own unexpired media (a carousel)",
            ok="201",
            body={
                "media_ids": {"type": "array", "items": _ID, "minItems": 1, "maxItems": 10},
                "caption": {"type": "string", "maxLength": 2200},
                "location": _STR,
                "place": _PLACE,
                "tagged_users": {"type": "array", "items": _ID},
                "alt_text": {"oneOf": [_STR, {"type": "array", "items": _STR}]},
            },
            errors={
                **_BAD,
                "409": f"{_IN_USE}: a media is or was your profile picture",
            },
            rate_limited=True,
            schema="Post",
        )
    },
    "/api/v1/posts/{post_id}": {
        "get": _op("A post", parameters=[_path("post_id")], errors=_NF, schema="Post"),
        "delete": _op(
            "Delete your post: it leaves every feed, its photo URLs answer 404",
            ok="204",
            parameters=[_path("post_id")],
            errors=_NF,
        ),
    },
    "/api/v1/posts/{post_id}/like": {
        "put": _op(
            "Like (idempotent)", parameters=[_path("post_id")], errors=_NF, rate_limited=True
        ),
        "delete": _op("Unlike (idempotent)", parameters=[_path("post_id")], errors=_NF),
    },
    "/api/v1/posts/{post_id}/save": {
        "put": _op("Save (idempotent)", parameters=[_path("post_id")], errors=_NF),
        "delete": _op("Unsave (idempotent)", parameters=[_path("post_id")], errors=_NF),
    },
    "/api/v1/posts/{post_id}/comments": {
        "get": _op(
            "Comments oldest first (parent_id: the replies to one comment)",
            parameters=[
                _path("post_id"),
                *_PAGE,
                {"name": "parent_id", "in": "query", "schema": _ID},
            ],
            errors=_NF,
        ),
        "post": _op(
            "Comment, or reply to a comment (one level)",
            ok="201",
            parameters=[_path("post_id")],
            body={"text": _STR, "parent_id": _ID},
            errors={**_BAD, **_NF},
            rate_limited=True,
        ),
    },
    "/api/v1/posts/{post_id}/comments/{comment_id}": {
        "delete": _op(
            "Delete a comment (its author, always; or the post's author)",
            ok="204",
            parameters=[_path("post_id"), _path("comment_id")],
            errors=_NF,
        )
    },
    "/api/v1/feed": {
        "get": _op(
            "The home feed: {posts, next_cursor, has_more}",
            parameters=[
                *_page(FeedConfig().page_size_max),
                {"name": "mode", "in": "query", "schema": {"enum": ["chronological", "ranked"]}},
            ],
            errors={"400": "bad cursor, limit or mode"},
        )
    },
    "/api/v1/notifications": {"get": _op("Notifications, grouped; unread_count", parameters=_PAGE)},
    "/api/v1/notifications/read": {
        "post": _op("Mark notifications read (up to an id, or all)", body={"up_to": _ID})
    },
}

_SESSION: Final = {
    "type": "object",
    "required": ["session_id", "created_at", "last_used_at", "user_agent", "address", "current"],
    "properties": {
        "session_id": _SESSION_ID,
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": {
            "type": "string",
            "format": "date-time",
            "description": "recorded at most once per [social] session_touch_s",
        },
        "user_agent": {"type": "string", "description": "as sent at sign-in"},
        "address": {"type": "string", "description": "the client address at sign-in"},
        "current": {"type": "boolean", "description": "the session of this request"},
    },
}

SCHEMAS: Final[dict[str, Any]] = {
    "SessionToken": {
        "type": "object",
        "required": ["token", "user_id"],
        "properties": {"token": _STR, "user_id": _ID},
    },
    "SessionList": {
        "type": "object",
        "required": ["sessions"],
        "properties": {"sessions": {"type": "array", "items": _SESSION}},
    },
    "PasswordChanged": {
        "type": "object",
        "required": ["sessions_revoked"],
        "properties": {"sessions_revoked": {"type": "integer", "minimum": 0}},
    },
    "User": {
        "type": "object",
        "required": ["user_id", "username"],
        "properties": {
            "user_id": _ID,
            "username": _STR,
            "full_name": _STR,
            "bio": _STR,
            "profile_pic_url": {"type": ["string", "null"]},
            "is_private": {"type": "boolean"},
            "is_verified": {"type": "boolean"},
            "follower_count": {"type": "integer"},
            "following_count": {"type": "integer"},
            "post_count": {"type": "integer"},
        },
    },
    "Post": {
        "type": "object",
        "required": ["post_id", "author", "media"],
        "properties": {
            "post_id": _ID,
            "author": {"type": "object"},
            "media": {"type": "array", "items": {"$ref": "#/components/schemas/Media"}},
            "caption": _STR,
            "place": {
                "type": ["object", "null"],
                "description": "the place its author chose: place_id, name, latitude, "
                "longitude, post_count (docs/api/search.md)",
            },
            "like_count": {"type": "integer"},
            "comment_count": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "viewer_has_liked": {"type": "boolean"},
            "viewer_has_saved": {"type": "boolean"},
        },
    },
}
