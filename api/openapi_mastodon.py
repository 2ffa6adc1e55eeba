"""The OpenAPI description of the Mastodon client API (docs/api/mastodon.md). Its entities
are Mastodon's (described there and in Mastodon's documentation), so their schemas here
say only their JSON type and the fields clients rely on; every answer a route can give is
listed, errors in Mastodon's shape (`MastodonError`, `OAuthError`)."""

from __future__ import annotations

from typing import Any, Final

_MASTODON_ERROR: Final = {"$ref": "#/components/schemas/MastodonError"}
_OAUTH_ERROR: Final = {"$ref": "#/components/schemas/OAuthError"}
_ID: Final = {"type": "string", "description": "64-bit id as a decimal string"}
_OBJECT: Final = {"type": "object"}
_LIST: Final = {"type": "array", "items": {"type": "object"}}
_ERRORS: Final = {
    "400": "malformed input",
    "401": "no token, or a revoked, expired or unknown one",
    "403": "outside the token's scopes",
    "404": "absent, or hidden from you (a block, a private account)",
    "409": "a conflict (a username taken, a media in use)",
    "413": "a body too large",
    "422": "what pinhole cannot do (a status without a photo, an app token acting as a user)",
    "429": "rate limited (Retry-After)",
}
_PAGE: Final = [
    {"name": name, "in": "query", "schema": {"type": "string"}}
    for name in ("max_id", "since_id", "min_id", "limit")
]

SCHEMAS: Final = {
    "MastodonError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "OAuthError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "MastodonAccount": {
        "type": "object",
        "required": ["id", "username", "acct", "avatar", "created_at"],
        "properties": {"id": _ID, "username": {"type": "string"}, "acct": {"type": "string"}},
    },
    "MastodonStatus": {
        "type": "object",
        "required": ["id", "account", "content", "media_attachments", "created_at"],
        "properties": {"id": _ID, "media_attachments": _LIST},
    },
    "MastodonConversation": {
        "type": "object",
        "required": ["id", "unread", "accounts", "last_status"],
        "properties": {
            "id": _ID,
            "unread": {"type": "boolean"},
            "accounts": _LIST,
            "last_status": {"type": ["object", "null"]},
        },
    },
    "MastodonMediaAttachment": {
        "type": "object",
        "required": ["id", "type", "url", "preview_url", "description", "blurhash"],
        "properties": {"id": _ID, "url": {"type": ["string", "null"]}},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(
    summary: str,
    ok: dict[str, tuple[str, dict[str, Any]]],
    *,
    auth: bool = True,
    path_id: str | None = None,
    query: list[str] | None = None,
    body: dict[str, Any] | None = None,
    multipart: bool = False,
    oauth: bool = False,
    link: bool = False,
) -> dict[str, Any]:
    error = _OAUTH_ERROR if oauth else _MASTODON_ERROR
    responses: dict[str, Any] = {
        code: {"description": text, **_json(error)} for code, text in _ERRORS.items()
    }
    for code, (text, schema) in ok.items():
        responses[code] = {"description": text, **_json(schema)}
        if link:
            responses[code]["headers"] = {
                "Link": {"schema": {"type": "string"}, "description": 'rel="next" first'}
            }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters: list[dict[str, Any]] = []
    if path_id is not None:
        parameters.append({"name": path_id, "in": "path", "required": True, "schema": _ID})
    parameters += [{"name": q, "in": "query", "schema": {"type": "string"}} for q in (query or [])]
    if link:
        parameters += _PAGE
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        schema = {"type": "object", "properties": body}
        content: dict[str, Any] = {
            "application/json": {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        }
        if multipart:
            content = {"multipart/form-data": {"schema": schema}}
        op["requestBody"] = {"required": multipart, "content": content}
    if auth:
        op["security"] = [{"bearer": []}]
    return op


_STR: Final = {"type": "string"}
_STATUS: Final = ("the Status", _ref("MastodonStatus"))
_ACCOUNT: Final = ("the Account", _ref("MastodonAccount"))
_RELATIONSHIP: Final = ("the Relationship", _OBJECT)
_MEDIA: Final = ("the MediaAttachment", _ref("MastodonMediaAttachment"))
_TOKEN_BODY: Final = {
    name: _STR
    for name in (
        "grant_type",
        "client_id",
        "client_secret",
        "username",
        "password",
        "code",
        "redirect_uri",
        "refresh_token",
        "scope",
    )
}
_AUTHORIZE_QUERY: Final = ["client_id", "redirect_uri", "scope", "response_type", "state"]


def _html(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"text/html": {"schema": _STR}}}


_AUTHORIZE_GET: Final = _op(
    "OAuth: the sign-in form", {}, auth=False, query=_AUTHORIZE_QUERY, oauth=True
)
_AUTHORIZE_GET["responses"]["200"] = _html("the sign-in form")
_AUTHORIZE_POST: Final = _op(
    "OAuth: sign in and grant a code",
    {},
    auth=False,
    body={name: _STR for name in [*_AUTHORIZE_QUERY, "username", "password"]},
    oauth=True,
)
_AUTHORIZE_POST["responses"]["200"] = _html("the code (out-of-band redirect)")
_AUTHORIZE_POST["responses"]["302"] = {"description": "to redirect_uri with the code"}
_AUTHORIZE_POST["responses"]["401"] = {
    "description": "the form again (wrong username or password), or an unknown client_id",
    "content": {"text/html": {"schema": _STR}, "application/json": {"schema": _OAUTH_ERROR}},
}

_STATUS_ACTIONS: Final = {
    f"/api/v1/statuses/{{status_id}}/{action}": {
        "post": _op(f"{action.capitalize()} a status", {"200": _STATUS}, path_id="status_id")
    }
    for action in ("favourite", "unfavourite", "bookmark", "unbookmark")
}
_ACCOUNT_ACTIONS: Final = {
    f"/api/v1/accounts/{{account_id}}/{action}": {
        "post": _op(
            f"{action.capitalize()} an account", {"200": _RELATIONSHIP}, path_id="account_id"
        )
    }
    for action in ("follow", "unfollow", "block", "unblock")
}
_FOLLOW_REQUEST_ACTIONS: Final = {
    f"/api/v1/follow_requests/{{account_id}}/{action}": {
        "post": _op(
            f"{action.capitalize()} a follow request", {"200": _RELATIONSHIP}, path_id="account_id"
        )
    }
    for action in ("authorize", "reject")
}
_CONVERSATIONS: Final = {
    "get": _op("Your direct-message threads", {"200": ("Conversations", _LIST)}, link=True)
}
_INSTANCE_V1: Final = {"get": _op("Instance (v1)", {"200": ("the Instance", _OBJECT)}, auth=False)}
_INSTANCE_V2: Final = {"get": _op("Instance (v2)", {"200": ("the Instance", _OBJECT)}, auth=False)}
_UPLOAD_BODY: Final = {
    "file": {"type": "string", "format": "binary"},
    "description": _STR,
    "focus": _STR,
}

PATHS: Final = {
    "/api/v1/instance": _INSTANCE_V1,
    "/api/v1/instance/": _INSTANCE_V1,
    "/api/v2/instance": _INSTANCE_V2,
    "/api/v2/instance/": _INSTANCE_V2,
    "/avatars/original/missing.png": {
        "get": {
            "summary": "The default avatar",
            "responses": {
                "200": {"description": "PNG", "content": {"image/png": {"schema": _STR}}}
            },
        }
    },
    "/.well-known/oauth-authorization-server": {
        "get": _op("OAuth server metadata (RFC 8414)", {"200": ("metadata", _OBJECT)}, auth=False)
    },
    "/api/v1/apps": {
        "post": _op(
            "Register an OAuth app",
            {"200": ("the Application with its client secret", _OBJECT)},
            auth=False,
            body={n: _STR for n in ("client_name", "redirect_uris", "scopes", "website")},
        )
    },
    "/api/v1/apps/verify_credentials": {
        "get": _op("The token's app", {"200": ("the Application", _OBJECT)})
    },
    "/oauth/authorize": {"get": _AUTHORIZE_GET, "post": _AUTHORIZE_POST},
    "/oauth/token": {
        "post": _op(
            "OAuth: a token (password, authorization_code, refresh_token, client_credentials)",
            {"200": ("the Token", _OBJECT)},
            auth=False,
            body=_TOKEN_BODY,
            oauth=True,
        )
    },
    "/oauth/revoke": {
        "post": _op(
            "OAuth: revoke a token",
            {"200": ("done", _OBJECT)},
            auth=False,
            body={n: _STR for n in ("client_id", "client_secret", "token")},
            oauth=True,
        )
    },
    "/api/v1/accounts/verify_credentials": {
        "get": _op("Your account", {"200": ("the CredentialAccount", _ref("MastodonAccount"))})
    },
    "/api/v1/accounts/relationships": {
        "get": _op("Relationships", {"200": ("Relationships", _LIST)}, query=["id[]"])
    },
    "/api/v1/accounts/lookup": {
        "get": _op("An account by username", {"200": _ACCOUNT}, query=["acct"])
    },
    "/api/v1/accounts/{account_id}": {
        "get": _op("An account", {"200": _ACCOUNT}, path_id="account_id")
    },
    "/api/v1/accounts/{account_id}/statuses": {
        "get": _op(
            "An account's statuses",
            {"200": ("Statuses", _LIST)},
            path_id="account_id",
            query=["pinned", "only_media", "exclude_replies", "exclude_reblogs"],
            link=True,
        )
    },
    **_ACCOUNT_ACTIONS,
    "/api/v2/media": {
        "post": _op(
            "Upload a media",
            {"200": _MEDIA, "202": ("processing: url null", _ref("MastodonMediaAttachment"))},
            body=_UPLOAD_BODY,
            multipart=True,
        )
    },
    "/api/v1/media": {
        "post": _op("Upload a media (v1)", {"200": _MEDIA}, body=_UPLOAD_BODY, multipart=True)
    },
    "/api/v1/media/{media_id}": {
        "put": _op(
            "Describe a media",
            {"200": _MEDIA},
            path_id="media_id",
            body={"description": _STR, "focus": _STR},
        )
    },
    "/api/v1/statuses": {
        "post": _op(
            "Post a status (at least one photo)",
            {"200": _STATUS},
            body={
                "status": _STR,
                "media_ids": {"type": "array", "items": _STR},
                "visibility": _STR,
            },
        )
    },
    "/api/v1/statuses/{status_id}": {
        "get": _op("A status", {"200": _STATUS}, path_id="status_id"),
        "delete": _op("Delete your status", {"200": _STATUS}, path_id="status_id"),
    },
    "/api/v1/statuses/{status_id}/context": {
        "get": _op("A status's context (none)", {"200": ("Context", _OBJECT)}, path_id="status_id")
    },
    **_STATUS_ACTIONS,
    "/api/v1/timelines/home": {
        "get": _op("The home timeline", {"200": ("Statuses", _LIST)}, link=True)
    },
    "/api/v1/favourites": {
        "get": _op("Your favourited statuses", {"200": ("Statuses", _LIST)}, link=True)
    },
    "/api/v1/bookmarks": {
        "get": _op("Your bookmarked statuses", {"200": ("Statuses", _LIST)}, link=True)
    },
    **_FOLLOW_REQUEST_ACTIONS,
    "/api/v1/conversations": _CONVERSATIONS,
    "/api/v1/conversations/": _CONVERSATIONS,
    "/api/v1/conversations/{conversation_id}/read": {
        "post": _op(
            "Mark a conversation read",
            {"200": ("the Conversation", _ref("MastodonConversation"))},
            path_id="conversation_id",
        )
    },
    "/api/v2/search": {
        "get": _op(
            "Search accounts and hashtags",
            {"200": ("Search results", _OBJECT)},
            query=["q", "type", "limit", "offset", "resolve"],
        )
    },
}
