"""JSON answers made with orjson: a feed page of 20 posts with a photo each is about 47 KB
of JSON, which the standard library's encoder made in 0.31 ms of CPU and orjson makes in
0.02-0.04 ms (ARCHITECTURE.md, "The hydrated feed over HTTP, cheaper per page"). The bytes
differ only in spacing and in non-ASCII text sent as UTF-8 rather than \\u escapes; both
are the same JSON.

The feed pages go one step further: a public post's JSON, without the viewer's flags, is
encoded once and remembered as bytes (api/media_docs.py `PublicPostDocuments`); a page is
spliced from those pieces (`open_object`, `json_list`) rather than encoded whole."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import orjson
from aiohttp import web

_OBJECT_END: Final = b"}"


def dumps(data: Any) -> bytes:
    """`data` as JSON bytes; whatever the standard encoder takes (non-string keys, any
    integer) is taken."""
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # what orjson refuses and json takes: integers past 64 bits
        return json.dumps(data).encode()


def open_object(data: dict[str, Any]) -> bytes:
    """A non-empty object's JSON without its closing brace, for members to be appended
    (`b',"k":v}'`)."""
    assert data, "an empty object has no member to append after"
    body = dumps(data)
    assert body.endswith(_OBJECT_END)
    return body[: -len(_OBJECT_END)]


def json_list(items: Sequence[bytes]) -> bytes:
    """A JSON list of already encoded values."""
    return b"[" + b",".join(items) + b"]"


def json_body_response(body: bytes, *, status: int = 200) -> web.Response:
    """Already encoded JSON as an application/json answer."""
    return web.Response(
        body=body,
        status=status,
        content_type="application/json",
        charset="utf-8",  # as aiohttp's json_response labels the other answers
    )


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """`data` (dicts, lists, strings, numbers, booleans, None) as an application/json
    answer; whatever the standard encoder takes (non-string keys, any integer) is taken."""
    return json_body_response(dumps(data), status=status)
