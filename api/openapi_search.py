"""The OpenAPI description of search, typeahead, hashtag pages and place pages
(docs/api/search.md); the `place` a new post may carry is in api/openapi_social.py."""

from __future__ import annotations

from typing import Any, Final

from api.openapi_social import _op, _path
from social.search_config import SearchConfig

_DEFAULTS: Final = SearchConfig()
_ID: Final = {"type": "string", "description": "64-bit id as a decimal string"}
_STR: Final = {"type": "string"}
_BAD: Final = {"400": "bad input (the JSON error body names it)"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_TAG_PATH: Final = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the hashtag, without or with its # (1 to 100 letters, digits, _)",
}
_POSTS_PAGE: Final = [
    {"name": "cursor", "in": "query", "schema": _STR, "description": "next_cursor of a page"},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": _DEFAULTS.page_posts_max},
    },
]


def _page_op(summary: str, path: dict[str, Any], missing: str) -> dict[str, Any]:
    return _op(
        summary,
        parameters=[path, *_POSTS_PAGE],
        errors={**_BAD, "404": missing},
        schema="PostPage",
    )


PATHS: Final[dict[str, Any]] = {
    "/api/v1/search": {
        "get": _op(
            "Search accounts, hashtags or places (prefix, substring, typos), ranked by match, "
            "popularity and your relationship; typeahead=true answers every kind (or `type`) "
            "with compact accounts and at most typeahead_results_max per kind",
            parameters=[
                {
                    "name": "q",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "maxLength": _DEFAULTS.query_chars_max},
                },
                {
                    "name": "type",
                    "in": "query",
                    "schema": {"enum": ["accounts", "hashtags", "places"]},
                },
                {"name": "typeahead", "in": "query", "schema": {"enum": ["true", "false"]}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": _DEFAULTS.results_max},
                },
            ],
            errors=_BAD,
            schema="SearchResults",
        )
    },
    "/api/v1/hashtags/{name}": {
        "get": _op(
            "A hashtag and the number of posts carrying it",
            parameters=[_TAG_PATH],
            errors={**_BAD, "404": "no post ever carried this hashtag"},
            schema="Hashtag",
        )
    },
    "/api/v1/hashtags/{name}/top": {
        "get": _page_op(
            "A hashtag's posts you may see, most liked and commented first",
            _TAG_PATH,
            "no post ever carried this hashtag",
        )
    },
    "/api/v1/hashtags/{name}/recent": {
        "get": _page_op("A hashtag's posts you may see, newest first", _TAG_PATH, "no such hashtag")
    },
    "/api/v1/places/{place_id}": {
        "get": _op(
            "A place and the number of posts naming it",
            parameters=[_path("place_id")],
            errors={"404": "no such place"},
            schema="Place",
        )
    },
    "/api/v1/places/{place_id}/top": {
        "get": _page_op(
            "A place's posts you may see, most liked and commented first",
            _path("place_id"),
            "no such place",
        )
    },
    "/api/v1/places/{place_id}/recent": {
        "get": _page_op(
            "A place's posts you may see, newest first", _path("place_id"), "no such place"
        )
    },
}

_COMPACT_ACCOUNT: Final = {
    "type": "object",
    "required": ["user_id", "username"],
    "properties": {
        "user_id": _ID,
        "username": _STR,
        "full_name": _STR,
        "profile_pic_url": {"type": ["string", "null"]},
        "is_verified": {"type": "boolean"},
        "is_private": {"type": "boolean"},
    },
}

SCHEMAS: Final[dict[str, Any]] = {
    "Hashtag": {
        "type": "object",
        "required": ["name", "post_count"],
        "properties": {"name": _STR, "post_count": {"type": "integer", "minimum": 0}},
    },
    "Place": {
        "type": "object",
        "required": ["place_id", "name", "latitude", "longitude", "post_count"],
        "properties": {
            "place_id": _ID,
            "name": _STR,
            "latitude": {"type": "number"},
            "longitude": {"type": "number"},
            "post_count": {"type": "integer", "minimum": 0},
        },
    },
    "SearchResults": {
        "type": "object",
        "required": ["q"],
        "properties": {
            "q": {"type": ["string", "null"]},
            "accounts": {
                "type": "array",
                "description": "User documents (compact ones in typeahead)",
                "items": {"oneOf": [_ref("User"), _COMPACT_ACCOUNT]},
            },
            "hashtags": {"type": "array", "items": _ref("Hashtag")},
            "places": {"type": "array", "items": _ref("Place")},
        },
    },
    "PostPage": {
        "type": "object",
        "required": ["posts", "next_cursor", "has_more"],
        "properties": {
            "posts": {"type": "array", "items": _ref("Post")},
            "next_cursor": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
    },
}
