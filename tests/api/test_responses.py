"""The orjson answers (api/responses.py) carry the same JSON as aiohttp's json_response."""

from __future__ import annotations

import json

from aiohttp import web

from api.responses import json_response


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
