"""Reading request input: JSON bodies (bounded by json_body_bytes_max through aiohttp's
client_max_size), path ids, and the limit/cursor of paginated lists."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.errors import BadRequest, NotFound
from common import ids


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; BadRequest when it is not one (413 beyond the limit)."""
    raw = await request.read()
    try:
        doc = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON", code="bad_json") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object", code="bad_json")
    return doc


def path_id(request: web.Request, name: str, what: str) -> int:
    """An id from the path; a malformed one is simply not found."""
    try:
        return ids.parse(request.match_info[name])
    except ValueError:
        raise NotFound(f"no such {what}") from None


def limit(request: web.Request, *, default: int, maximum: int) -> int:
    text = request.query.get("limit")
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"limit must be within 1..{maximum}")
    return value


def id_cursor(request: web.Request, name: str = "cursor") -> int | None:
    """A list cursor that is an id (the last item of the previous page)."""
    text = request.query.get(name)
    if not text:
        return None
    try:
        return ids.parse(text)
    except ValueError:
        raise BadRequest(f"{name} is not a cursor from this API", code="bad_cursor") from None


def page_document(items: list[Any], key: str, *, cursor: str | None) -> dict[str, Any]:
    return {key: items, "next_cursor": cursor, "has_more": cursor is not None}
