"""The OpenAPI description of the direct-message and real-time routes
(docs/api/messages.md, docs/api/realtime.md)."""

from __future__ import annotations

from typing import Any, Final

from api.openapi_social import _ID, _PAGE, _STR, _op, _path
from social import messages
from social.messages_schema import CLIENT_ID_CHARS_MAX, EMOJI_CHARS_MAX, TITLE_CHARS_MAX

SEQ_MAX: Final = 2**31 - 1
_NULL_ID: Final = {"type": ["string", "null"], "description": "64-bit id as a decimal string"}
_NULL_STR: Final = {"type": ["string", "null"]}
_SEQ: Final = {"type": "integer", "minimum": 0, "maximum": SEQ_MAX}
_CONTENT: Final[dict[str, Any]] = {
    "client_id": {
        "type": "string",
        "minLength": 1,
        "maxLength": CLIENT_ID_CHARS_MAX,
        "description": "chosen by the client, the same for every retry of one message",
    },
    "kind": {"type": "string", "enum": list(messages.KINDS)},
    "text": {"type": "string", "maxLength": messages.MESSAGE_CHARS_MAX},
    "media_id": _ID,
    "post_id": _ID,
    "story_id": _ID,
}
_SEND_ERRORS: Final = {
    "403": "blocked: a block stands between you and the recipient",
    "404": "no such user, thread, media or post (or not visible to you)",
}
_THREAD: Final = [_path("thread_id")]
_MESSAGE: Final = [_path("thread_id"), _path("message_id")]
_NF: Final = {"404": "no such thread or message, or you are not a member"}
_CHANGE: Final = {
    "type": "object",
    "required": ["change_seq"],
    "properties": {"change_seq": {"type": "integer"}},
}


def _send(summary: str, *, parameters: list[dict[str, Any]] | None, new: bool) -> dict[str, Any]:
    body = dict(_CONTENT)
    required = ["client_id"]
    if new:
        body["recipient_ids"] = {
            "type": "array",
            "items": _ID,
            "minItems": 1,
            "maxItems": messages.GROUP_MEMBERS_MAX - 1,
        }
        body["title"] = {"type": "string", "maxLength": TITLE_CHARS_MAX}
        required.append("recipient_ids")
    op = _op(
        summary,
        ok="201",
        ok_description="the message, committed",
        body=body,
        required=required,
        parameters=parameters,
        errors=_SEND_ERRORS,
        rate_limited=True,
        schema="Message",
    )
    op["responses"]["200"] = {
        **op["responses"]["201"],
        "description": "a retry: the message its first attempt made (created false)",
    }
    return op


PATHS: Final[dict[str, Any]] = {
    "/api/v1/messages": {
        "post": _send(
            "Send a first message: to the 1:1 thread with one recipient (made if new), or a "
            "new group with a title or several recipients",
            parameters=None,
            new=True,
        )
    },
    "/api/v1/threads": {
        "get": _op(
            "Your threads by last activity, with unread counts and the last message",
            parameters=[
                {
                    "name": "folder",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(messages.FOLDERS)},
                },
                *_PAGE,
            ],
            schema="ThreadList",
        )
    },
    "/api/v1/threads/{thread_id}": {
        "get": _op("One thread", parameters=_THREAD, errors=_NF, schema="Thread")
    },
    "/api/v1/threads/{thread_id}/messages": {
        "get": _op(
            "Catch-up: the messages changed after change sequence after_seq, oldest first",
            parameters=[
                *_THREAD,
                {"name": "after_seq", "in": "query", "schema": _SEQ},
                _PAGE[1],
            ],
            errors=_NF,
            schema="MessagePage",
        ),
        "post": _send("Send a message in a thread", parameters=_THREAD, new=False),
    },
    "/api/v1/threads/{thread_id}/messages/{message_id}": {
        "delete": _op(
            "Unsend (delete for everyone) your own message",
            parameters=_MESSAGE,
            errors={**_NF, "403": "not_sender: only the sender can unsend"},
            schema="Change",
        )
    },
    "/api/v1/threads/{thread_id}/messages/{message_id}/reaction": {
        "put": _op(
            "React to a message (replaces your reaction)",
            parameters=_MESSAGE,
            body={"emoji": {"type": "string", "minLength": 1, "maxLength": EMOJI_CHARS_MAX}},
            required=["emoji"],
            errors=_NF,
            schema="Change",
        ),
        "delete": _op("Take your reaction back", parameters=_MESSAGE, errors=_NF, schema="Change"),
    },
    "/api/v1/threads/{thread_id}/messages/{message_id}/hide": {
        "post": _op("Delete a message for you only", ok="204", parameters=_MESSAGE, errors=_NF)
    },
    "/api/v1/threads/{thread_id}/read": {
        "post": _op(
            "Read receipt: you have read up to seq (default: the newest message)",
            parameters=_THREAD,
            body={"seq": _SEQ},
            errors=_NF,
            schema="ReadReceipt",
        )
    },
    "/api/v1/threads/{thread_id}/accept": {
        "post": _op("Accept a message request", ok="204", parameters=_THREAD, errors=_NF)
    },
    "/api/v1/threads/{thread_id}/typing": {
        "post": _op(
            "Typing indicator: published to the other members, never stored",
            ok="204",
            parameters=_THREAD,
            errors=_NF,
        )
    },
    "/api/v1/realtime/credentials": {
        "post": _op(
            "MQTT credentials for this session (revoked when it signs out)",
            ok="201",
            errors={
                "404": "realtime_off: this deployment has no broker",
                "503": "realtime_unavailable: the broker did not answer (Retry-After)",
            },
            schema="RealtimeCredentials",
        )
    },
}

_MESSAGE_SCHEMA: Final = {
    "type": "object",
    "required": ["message_id", "thread_id"],
    "properties": {
        "message_id": _ID,
        "thread_id": _ID,
        "seq": {"type": "integer"},
        "change_seq": {"type": "integer"},
        "sender_id": _ID,
        "client_id": _STR,
        "kind": {"type": "string", "enum": list(messages.KINDS)},
        "text": _NULL_STR,
        "media_id": _NULL_ID,
        "post_id": _NULL_ID,
        "story_id": _NULL_ID,
        "created_at": {"type": "string", "format": "date-time"},
        "unsent": {"type": "boolean"},
        "reactions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["user_id", "emoji"],
                "properties": {"user_id": _ID, "emoji": _STR},
            },
        },
        "created": {"type": "boolean", "description": "false: a retry found the message"},
        "media": {
            "description": "a media message's media, its URLs signed and expiring",
            "oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Media"}],
        },
    },
}

SCHEMAS: Final[dict[str, Any]] = {
    "Message": _MESSAGE_SCHEMA,
    "Thread": {
        "type": "object",
        "required": ["thread_id", "kind", "folder", "last_seq", "unread_count", "members"],
        "properties": {
            "thread_id": _ID,
            "kind": {"type": "string", "enum": ["direct", "group"]},
            "title": _NULL_STR,
            "created_by": _ID,
            "folder": {"type": "string", "enum": list(messages.FOLDERS)},
            "accepted": {"type": "boolean"},
            "last_seq": {"type": "integer"},
            "last_change_seq": {"type": "integer"},
            "unread_count": {"type": "integer"},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id", "last_read_seq"],
                    "properties": {"user_id": _ID, "last_read_seq": {"type": "integer"}},
                },
            },
            "last_message": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Message"}]},
        },
    },
    "ThreadList": {
        "type": "object",
        "required": ["threads", "next_cursor", "has_more"],
        "properties": {
            "threads": {"type": "array", "items": {"$ref": "#/components/schemas/Thread"}},
            "next_cursor": _NULL_STR,
            "has_more": {"type": "boolean"},
        },
    },
    "MessagePage": {
        "type": "object",
        "required": ["messages", "next_after_seq", "has_more", "last_change_seq"],
        "properties": {
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
            "next_after_seq": {"type": "integer"},
            "has_more": {"type": "boolean"},
            "last_change_seq": {"type": "integer"},
        },
    },
    "Change": _CHANGE,
    "ReadReceipt": {
        "type": "object",
        "required": ["last_read_seq"],
        "properties": {"last_read_seq": {"type": "integer"}},
    },
    "RealtimeCredentials": {
        "type": "object",
        "required": ["username", "password", "client_id", "host", "port", "topics"],
        "properties": {
            "username": _STR,
            "password": _STR,
            "client_id": _STR,
            "host": _STR,
            "port": {"type": "integer"},
            "websocket_url": _NULL_STR,
            "topics": {"type": "object"},
        },
    },
}
