"""Explore through the real API (SQLite and PostgreSQL): a stranger's post that a
like-minded account liked comes first, hydrated like a feed post; a block made after the
list was computed hides the blocked account's posts at once; bad cursors and limits are a
400."""

from __future__ import annotations

from tests.api.conftest import MediaEnv
from tests.social.conftest import Client, user


async def test_explore_through_the_api(social_env: MediaEnv) -> None:
    env = social_env
    _, ann = await user(env, "ann_explore")
    _, nia = await user(env, "nia_explore")  # likes what ann likes, and more
    _, bob = await user(env, "bob_explore")
    cat_id, cat = await user(env, "cat_explore")
    seed = (await bob.post("#harbour seed"))["post_id"]
    liked = (await cat.post("#harbour more"))["post_id"]
    for client, post_id in ((ann, seed), (nia, seed), (nia, liked)):
        status, doc, _ = await client.call("PUT", f"/api/v1/posts/{post_id}/like")
        assert status in (200, 204), doc

    status, doc, _ = await ann.call("GET", "/api/v1/explore", limit="5")
    assert status == 200, doc
    assert [p["post_id"] for p in doc["posts"]] == [liked]
    assert doc["posts"][0]["media"] and doc["has_more"] is False and doc["next_cursor"] is None

    # The list is stored; a block hides the blocked account's posts from it at once.
    status, doc, _ = await ann.call("POST", "/api/v1/blocks", {"user_id": cat_id})
    assert status in (200, 201, 204), doc
    status, doc, _ = await ann.call("GET", "/api/v1/explore")
    assert status == 200 and doc["posts"] == [], doc

    for query in ({"cursor": "x"}, {"cursor": "-1"}, {"limit": "0"}, {"limit": "61"}):
        status, doc, _ = await ann.call("GET", "/api/v1/explore", **query)
        assert status == 400 and doc["error"]["code"], (query, doc)
    status, _, _ = await Client(env, None).call("GET", "/api/v1/explore")
    assert status == 401
