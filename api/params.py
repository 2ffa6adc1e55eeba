"""Reading request input: JSON bodies (bounded by json_body_bytes_max through aiohttp's
client_max_size), path ids, integer headers, and the limit/cursor of paginated lists.

Everything a client sends is checked here before it reaches SQL or a file: numbers are
bounded before they are converted (a BIGINT column overflows past 2^63 - 1, and int() of
thousands of digits is slow), and text is valid Unicode without NUL (PostgreSQL's text
refuses NUL, UTF-8 refuses lone surrogates), so bad input is a 400 and never a 5xx."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.errors import BadApiRequest, NoSuchResource
from common import ids


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; BadApiRequest `bad_json` when it is not one, nests deeper
    than Python's parser goes, or holds a string (key or value) with NUL or a lone
    surrogate; 413 beyond json_body_bytes_max."""
    raw = await request.read()
    try:
        doc = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadApiRequest("the body is not JSON", code="bad_json") from None
    except RecursionError:
        raise BadApiRequest("the body nests too deeply", code="bad_json") from None
    if not isinstance(doc, dict):
        raise BadApiRequest("the body must be a JSON object", code="bad_json")
    _check_strings(doc)
    return doc


def _check_strings(doc: Any) -> None:
    # Iterative: the parser has already bounded the depth, this walk must not recurse on it.
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                text(key, "a JSON key")
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            text(item, "a JSON string")


def text(value: str, what: str) -> str:
    """`value` when it is text a database stores: UTF-8 encodable (no lone surrogates,
    which JSON escapes and undecodable headers produce) and free of NUL; else BadApiRequest."""
    if "\0" in value:
        raise BadApiRequest(f"{what} contains a NUL character", code="bad_text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadApiRequest(f"{what} is not valid Unicode", code="bad_text") from None
    return value


def decimal(given: str, what: str, *, maximum: int, minimum: int = 0) -> int:
    """A canonical decimal integer within minimum..maximum (0 <= minimum; see
    common.ids.parse_decimal); BadApiRequest otherwise."""
    try:
        value = ids.parse_decimal(given, maximum=maximum, what=what)
    except ValueError:
        value = -1
    if value < minimum:
        raise BadApiRequest(f"{what} must be an integer within {minimum}..{maximum}")
    return value


def header_int(request: web.Request, name: str, *, maximum: int = ids.ID_MAX) -> int:
    """An integer header (Upload-Length, Upload-Offset) within 0..maximum; BadApiRequest when
    it is absent or anything else."""
    return decimal(request.headers.get(name, ""), name, maximum=maximum)


def path_id(request: web.Request, name: str, what: str) -> int:
    """An id from the path; a malformed one is simply not found."""
    try:
        return ids.parse(request.match_info[name])
    except ValueError:
        raise NoSuchResource(f"no such {what}") from None


def limit(request: web.Request, *, default: int, maximum: int) -> int:
    given = request.query.get("limit")
    if given is None:
        return default
    return decimal(given, "limit", minimum=1, maximum=maximum)


def id_cursor(request: web.Request, name: str = "cursor") -> int | None:
    """A list cursor that is an id (the last item of the previous page)."""
    text = request.query.get(name)
    if not text:
        return None
    try:
        return ids.parse(text)
    except ValueError:
        raise BadApiRequest(f"{name} is not a cursor from this API", code="bad_cursor") from None


def page_document(items: list[Any], key: str, *, cursor: str | None) -> dict[str, Any]:
    return {key: items, "next_cursor": cursor, "has_more": cursor is not None}
