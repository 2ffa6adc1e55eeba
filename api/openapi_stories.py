"""The OpenAPI description of the stories, close-friends and highlights routes
(docs/api/stories.md)."""

from __future__ import annotations

from typing import Any, Final

from api.openapi_social import _ID, _PAGE, _STR, _op, _path
from social.config import SocialConfig
from social.messages import MESSAGE_CHARS_MAX
from social.messages_schema import CLIENT_ID_CHARS_MAX
from social.stories_schema import AUDIENCES

_DEFAULTS: Final = SocialConfig()
_NULL_STR: Final = {"type": ["string", "null"]}
_TIME: Final = {"type": "string", "format": "date-time"}
_STORY: Final = [_path("story_id")]
_HIGHLIGHT: Final = [_path("highlight_id")]
_USER: Final = [_path("user_id")]
_NF: Final = {"404": "no such story (expired, or not visible to you)"}
_HNF: Final = {"404": "no such highlight (or not visible to you)"}
_REF = "#/components/schemas/"


def _list(item: str, key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "next_cursor", "has_more"],
        "properties": {
            key: {"type": "array", "items": {"$ref": _REF + item}},
            "next_cursor": _NULL_STR,
            "has_more": {"type": "boolean"},
        },
    }


# The compact account document (api/social_docs.py `author_document`) whose fields the
# tray's authors, the viewer list and the close-friends list carry beside their ids; absent
# for an account gone (and, in the lists, one on either side of a block with you).
_ACCOUNT_FIELDS: Final[dict[str, Any]] = {
    "username": _STR,
    "full_name": _STR,
    "profile_pic_url": {**_NULL_STR, "description": "public URL of the profile picture"},
    "is_verified": {"type": "boolean"},
    "is_private": {"type": "boolean"},
}

_TITLE: Final = {"type": "string", "maxLength": _DEFAULTS.highlight_title_chars_max}
_STORY_IDS: Final = {
    "type": "array",
    "items": _ID,
    "minItems": 1,
    "maxItems": _DEFAULTS.highlight_stories_max,
}

PATHS: Final[dict[str, Any]] = {
    "/api/v1/stories": {
        "post": _op(
            "Post a story: a photo or a video (at most story_video_s_max s) of your own "
            "media; it lives exactly 24 h",
            ok="201",
            ok_description="the story",
            body={
                "media_id": _ID,
                "can_reply": {"type": "boolean"},
                "audience": {"type": "string", "enum": list(AUDIENCES)},
            },
            required=["media_id"],
            errors={"404": "no such media of yours (uploaded and not expired)"},
            rate_limited=True,
            schema="Story",
        )
    },
    "/api/v1/stories/tray": {
        "get": _op(
            "The stories tray: you, then the accounts you follow with live stories, unseen "
            "first, then by affinity; each author's stories oldest first",
            schema="StoryTray",
        )
    },
    "/api/v1/stories/archive": {
        "get": _op(
            "Your expired stories whose media are kept (what highlights are made of)",
            parameters=_PAGE,
            schema="StoryList",
        )
    },
    "/api/v1/users/{user_id}/stories": {
        "get": _op(
            "An account's live stories you may see, oldest first",
            parameters=_USER,
            schema="StoryReel",
        )
    },
    "/api/v1/stories/{story_id}": {
        "get": _op("One live story", parameters=_STORY, errors=_NF, schema="Story")
    },
    "/api/v1/stories/{story_id}/seen": {
        "post": _op(
            "Mark a story seen (idempotent: a repeat changes nothing)",
            parameters=_STORY,
            errors=_NF,
            schema="StorySeen",
        )
    },
    "/api/v1/stories/{story_id}/viewers": {
        "get": _op(
            "The author's view count and viewer list (the list within "
            "story_views_flush_interval_ms of the views)",
            parameters=[*_STORY, *_PAGE],
            errors={"404": "no such story of yours"},
            schema="StoryViewers",
        )
    },
    "/api/v1/stories/{story_id}/replies": {
        "post": _op(
            "Reply to a story: a message (kind story_reply) in your 1:1 thread with its author",
            ok="201",
            ok_description="the message, committed",
            parameters=_STORY,
            body={
                "client_id": {"type": "string", "minLength": 1, "maxLength": CLIENT_ID_CHARS_MAX},
                "text": {"type": "string", "minLength": 1, "maxLength": MESSAGE_CHARS_MAX},
            },
            required=["client_id", "text"],
            errors={
                **_NF,
                "403": "replies_off, or blocked",
            },
            rate_limited=True,
            schema="Message",
        )
    },
    "/api/v1/close_friends": {
        "get": _op("Your close friends", parameters=_PAGE, schema="CloseFriends"),
        "post": _op(
            "Add an account to your close friends",
            ok="201",
            ok_description="added (200: already there)",
            body={"user_id": _ID},
            required=["user_id"],
            errors={"404": "no such user"},
            schema="CloseFriend",
        ),
    },
    "/api/v1/close_friends/{user_id}": {
        "delete": _op("Remove an account from your close friends", ok="204", parameters=_USER)
    },
    "/api/v1/highlights": {
        "post": _op(
            "Make a highlight of your own stories (live or archived)",
            ok="201",
            ok_description="the highlight",
            body={"title": _TITLE, "story_ids": _STORY_IDS},
            required=["title", "story_ids"],
            errors={"404": "no such story of yours (or its media is gone)"},
            schema="Highlight",
        )
    },
    "/api/v1/users/{user_id}/highlights": {
        "get": _op(
            "An account's highlights you may see, newest first",
            parameters=[*_USER, *_PAGE],
            errors={"404": "no such user (or not visible to you)"},
            schema="HighlightList",
        )
    },
    "/api/v1/highlights/{highlight_id}": {
        "get": _op("One highlight", parameters=_HIGHLIGHT, errors=_HNF, schema="Highlight"),
        "patch": _op(
            "Rename your highlight and/or replace its stories",
            parameters=_HIGHLIGHT,
            body={"title": _TITLE, "story_ids": _STORY_IDS},
            errors=_HNF,
            schema="Highlight",
        ),
        "delete": _op("Delete your highlight", ok="204", parameters=_HIGHLIGHT, errors=_HNF),
    },
}

_STORY_SCHEMA: Final = {
    "type": "object",
    "required": ["story_id", "author_id", "media_type", "audience", "created_at", "expires_at"],
    "properties": {
        "story_id": _ID,
        "author_id": _ID,
        "media_type": {"type": "string", "enum": ["image", "video"]},
        "can_reply": {"type": "boolean"},
        "audience": {"type": "string", "enum": list(AUDIENCES)},
        "created_at": _TIME,
        "expires_at": _TIME,
        "seen": {"type": ["boolean", "null"]},
        "media": {
            "oneOf": [{"type": "null"}, {"$ref": _REF + "Media"}],
            "description": "signed, expiring URLs",
        },
    },
}

SCHEMAS: Final[dict[str, Any]] = {
    "Story": _STORY_SCHEMA,
    "StoryList": _list("Story", "stories"),
    "StoryReel": {
        "type": "object",
        "required": ["stories"],
        "properties": {"stories": {"type": "array", "items": {"$ref": _REF + "Story"}}},
    },
    "StoryTray": {
        "type": "object",
        "required": ["authors"],
        "properties": {
            "authors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id", "username", "has_unseen", "stories"],
                    "properties": {
                        "user_id": _ID,
                        **_ACCOUNT_FIELDS,
                        "has_unseen": {"type": "boolean"},
                        "stories": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["story_id", "created_at", "expires_at", "seen"],
                                "properties": {
                                    "story_id": _ID,
                                    "media_type": _STR,
                                    "audience": _STR,
                                    "created_at": _TIME,
                                    "expires_at": _TIME,
                                    "seen": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "StorySeen": {
        "type": "object",
        "required": ["story_id", "first_view"],
        "properties": {"story_id": _ID, "first_view": {"type": "boolean"}},
    },
    "StoryViewers": {
        "type": "object",
        "required": ["viewers", "view_count", "next_cursor", "has_more"],
        "properties": {
            "viewers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id", "viewed_at"],
                    "properties": {"user_id": _ID, "viewed_at": _TIME, **_ACCOUNT_FIELDS},
                },
            },
            "view_count": {"type": "integer", "minimum": 0},
            "next_cursor": _NULL_STR,
            "has_more": {"type": "boolean"},
        },
    },
    "CloseFriend": {
        "type": "object",
        "required": ["user_id", "added"],
        "properties": {"user_id": _ID, "added": {"type": "boolean"}},
    },
    "CloseFriends": {
        "type": "object",
        "required": ["users", "next_cursor", "has_more"],
        "properties": {
            "users": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id"],
                    "properties": {"user_id": _ID, **_ACCOUNT_FIELDS},
                },
            },
            "next_cursor": _NULL_STR,
            "has_more": {"type": "boolean"},
        },
    },
    "Highlight": {
        "type": "object",
        "required": ["highlight_id", "owner_id", "title", "stories"],
        "properties": {
            "highlight_id": _ID,
            "owner_id": _ID,
            "title": _STR,
            "created_at": _TIME,
            "updated_at": _TIME,
            "stories": {"type": "array", "items": {"$ref": _REF + "Story"}},
        },
    },
    "HighlightList": _list("Highlight", "highlights"),
}
