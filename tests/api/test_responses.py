"""The orjson answers (api/responses.py) carry the same JSON as aiohttp's json_response."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.responses import dumps, json_body_response, json_list, json_response, open_object


def test_the_same_json_and_content_type_as_aiohttps() -> None:
    doc = {"posts": [{"caption": 'café ☕ "quoted"\n', "like_count": 3, "url": None}], "ok": True}
    ours = json_response(doc, status=201)
    theirs = web.json_response(doc, status=201)
    assert ours.status == theirs.status == 201
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]
    assert isinstance(ours.body, bytes) and isinstance(theirs.body, bytes)
    assert json.loads(ours.body) == json.loads(theirs.body) == doc
    assert "café ☕".encode() in ours.body  # UTF-8, not \u escapes


def test_what_orjson_refuses_is_encoded_as_json_would() -> None:
    doc = {"big": 1 << 70, "negative": -(1 << 64), 7: "an int key"}
    ours = json_response(doc)
    assert isinstance(ours.body, bytes)
    assert json.loads(ours.body) == json.loads(json.dumps(doc))


def test_a_spliced_list_is_the_json_of_its_documents() -> None:
    """open_object + appended members + json_list: the JSON the whole list encodes to."""
    docs: list[dict[str, Any]] = [
        {"post_id": "1", "caption": 'a ☕ "b"}', "big": 1 << 70},
        {"post_id": "2"},
    ]
    flags = [{"liked": True}, {"liked": False}]
    items = [open_object(d) + b"," + dumps(f)[1:] for d, f in zip(docs, flags, strict=True)]
    assert json.loads(json_list(items)) == [d | f for d, f in zip(docs, flags, strict=True)]
    assert json.loads(json_list([])) == []
    answer = json_body_response(json_list(items))
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
