"""Search, hashtag pages and place pages through the real API (SQLite and PostgreSQL): a
profile edit and a new post are searchable at once, typeahead answers every kind, blocks
hide accounts and posts, bad input is a 4xx, the Mastodon API's account search shares
the service; and a JPEG with a GPS position posted with a chosen place shows the place,
never the camera's position, in any public variant."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
from PIL import Image

from tests.api.conftest import MediaEnv
from tests.api.media_files import jpeg_with_gps
from tests.social.conftest import Client, user


async def fetch(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200, url
        return await r.read()


async def search(client: Client, q: str, **query: str) -> dict[str, Any]:
    status, doc, _ = await client.call("GET", "/api/v1/search", q=q, **query)
    assert status == 200, doc
    return dict(doc)


async def test_search_and_pages_through_the_api(social_env: MediaEnv) -> None:
    env = social_env
    _, ann = await user(env, "ann_search")
    bob_id, bob = await user(env, "bob_search")
    _, eve = await user(env, "eve_search")
    status, doc, _ = await bob.call("PATCH", "/api/v1/accounts/me", {"full_name": "Robert Lumen"})
    assert status == 200, doc

    # A profile edit is searchable at once: by full name, by a typo, in typeahead.
    found = await search(ann, "lumen", type="accounts")
    assert [a["user_id"] for a in found["accounts"]] == [bob_id]
    assert found["accounts"][0]["follower_count"] == 0  # a full user document
    typed = await search(ann, "robret", typeahead="true")
    assert [a["user_id"] for a in typed["accounts"]] == [bob_id]
    assert set(typed) == {"q", "accounts", "hashtags", "places"}

    # A JPEG with GPS EXIF, posted with a chosen place and a hashtag.
    media_id = await bob.upload(jpeg_with_gps(640, 480), "gps.jpg")
    status, doc, _ = await bob.call("GET", f"/api/v1/media/{media_id}", wait_s="10")
    assert status == 200 and doc["status"] == "ready", doc
    place = {"name": "Lighthouse Point", "latitude": 50.123456, "longitude": -4.987654}
    status, post, _ = await bob.call(
        "POST",
        "/api/v1/posts",
        {"media_ids": [media_id], "caption": "beam #lighthousekeeper", "place": place},
    )
    assert status == 201, post
    assert post["location"] == "Lighthouse Point"
    assert post["place"]["name"] == "Lighthouse Point" and post["place"]["latitude"] == 50.12
    for item in post["media"]:
        for variant in item["variants"].values():
            for url in variant["formats"].values():
                body = await fetch(url)
                assert b"Exif" not in body and b"pinhole test camera" not in body
                assert not Image.open(io.BytesIO(body)).getexif()

    tags = (await search(ann, "lighthouse", type="hashtags"))["hashtags"]
    assert tags == [{"name": "lighthousekeeper", "post_count": 1}]
    places = (await search(ann, "lighthous pt", type="places"))["places"]
    assert [p["name"] for p in places] == ["Lighthouse Point"]
    assert (places[0]["latitude"], places[0]["longitude"]) == (50.12, -4.99)
    place_id = places[0]["place_id"]
    status, doc, _ = await ann.call("GET", f"/api/v1/places/{place_id}")
    assert status == 200 and doc["post_count"] == 1, doc
    status, doc, _ = await ann.call("GET", "/api/v1/hashtags/%23LighthouseKeeper")
    assert (status, doc) == (200, {"name": "lighthousekeeper", "post_count": 1})
    for path in (
        "/api/v1/hashtags/lighthousekeeper/recent",
        "/api/v1/hashtags/lighthousekeeper/top",
        f"/api/v1/places/{place_id}/recent",
        f"/api/v1/places/{place_id}/top",
    ):
        status, doc, _ = await ann.call("GET", path, limit="5")
        assert status == 200, (path, doc)
        assert [p["post_id"] for p in doc["posts"]] == [post["post_id"]], path
        assert doc["has_more"] is False

    # Blocks: eve blocks bob; neither finds the other, nor sees the other's posts.
    assert (await eve.call("POST", "/api/v1/blocks", {"user_id": bob_id}))[0] == 201
    assert (await search(eve, "bob_search", type="accounts"))["accounts"] == []
    assert (await search(bob, "eve_s", type="accounts"))["accounts"] == []
    status, doc, _ = await eve.call("GET", "/api/v1/hashtags/lighthousekeeper/recent")
    assert status == 200 and doc["posts"] == []
    assert [a["user_id"] for a in (await search(ann, "_search", type="accounts"))["accounts"]]

    # Bad input: 4xx JSON errors.
    for query in (
        {"q": "x", "type": "posts"},
        {"q": "x"},
        {"q": "", "type": "accounts"},
        {"q": "x" * 101, "type": "accounts"},
        {"q": "x", "type": "accounts", "limit": "0"},
        {"q": "x", "typeahead": "yes"},
        {"q": "x", "typeahead": "true", "limit": "11"},
        {"q": "a\x00b", "type": "accounts"},
    ):
        status, doc, _ = await ann.call("GET", "/api/v1/search", **query)
        assert status == 400 and "error" in doc, (query, doc)
    for path, code in (
        ("/api/v1/hashtags/no-such!", 400),
        ("/api/v1/hashtags/neverused", 404),
        ("/api/v1/hashtags/neverused/top", 404),
        ("/api/v1/places/12345", 404),
        ("/api/v1/places/nope/recent", 404),
        ("/api/v1/hashtags/lighthousekeeper/top?cursor=zz", 400),
        ("/api/v1/hashtags/lighthousekeeper/recent?cursor=%00", 400),
    ):
        status, doc, _ = await ann.call("GET", path)
        assert status == code and "error" in doc, (path, doc)
    status, doc, _ = await ann.call(
        "POST",
        "/api/v1/posts",
        {"media_ids": [await ann.photo()], "place": {"name": "x", "latitude": 100, "longitude": 0}},
    )
    assert status == 400, doc
    assert (await Client(env, None).call("GET", "/api/v1/search", q="bob", type="accounts"))[
        0
    ] == 401
