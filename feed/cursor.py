"""Feed cursors: opaque to clients (URL-safe base64 of a small JSON document), versioned.
A chronological cursor holds the last post id shown ("older than this"): ids are unique and
totally ordered, so pages neither repeat nor skip posts, also among posts of the same
millisecond, whatever is inserted meanwhile. A ranked cursor holds the anchor (the newest
candidate when the first page was made) and the offset into the ranking.

A cursor comes back from a client, so every field is checked as input: ids within
common.ids' range (the anchor below its end, since the read asks for ids below anchor + 1)
and the offset a small integer, never a number of any size for the database to overflow
on. Anything else raises BadCursor (feed/errors.py), a 400."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

from common import ids
from feed.errors import BadCursor

VERSION: Final = 1
CURSOR_CHARS_MAX: Final = 200
# Ranked pages walk a list of at most [feed] ranked_candidates_max posts; an offset past it
# only reads an empty page, and this bound keeps it a machine integer.
OFFSET_MAX: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Cursor:
    before: int | None = None  # chronological: posts with id < before
    anchor: int | None = None  # ranked: candidates with id <= anchor
    offset: int = 0


def encode(cursor: Cursor) -> str:
    doc: dict[str, object] = {"v": VERSION}
    if cursor.anchor is not None:
        doc.update(a=str(cursor.anchor), o=cursor.offset)
    elif cursor.before is not None:
        doc["b"] = str(cursor.before)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str | None) -> Cursor:
    if not text:
        return Cursor()
    if len(text) > CURSOR_CHARS_MAX:
        raise BadCursor("cursor too long")
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            raise BadCursor("unknown cursor version")
        if "a" in doc:
            offset = doc["o"]
            if type(offset) is not int or not 0 <= offset <= OFFSET_MAX:
                raise BadCursor("bad cursor offset")
            anchor = _id(doc["a"])
            if anchor >= ids.ID_MAX:
                raise BadCursor("bad cursor anchor")
            return Cursor(anchor=anchor, offset=offset)
        return Cursor(before=_id(doc["b"]) if "b" in doc else None)
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("not a cursor from this API") from None


def _id(value: Any) -> int:
    if not isinstance(value, str):
        raise BadCursor("not a cursor from this API")
    return ids.parse(value)
