"""The social API end to end on a real cluster (directory, four stores, router, API, a
media worker): accounts and sessions, privacy, blocks, posts and their needles, likes,
comments, notifications, the feed, rate limits, and bad input."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import aiohttp

from social.schema import sessions
from tests.api.conftest import MediaEnv
from tests.directory.conftest import eventually
from tests.social.conftest import Client, social_cluster, user


async def test_accounts_sessions_and_every_route_needs_one(social_env: MediaEnv) -> None:
    env = social_env
    anon = Client(env, None)
    for method, path in [
        ("GET", "/api/v1/feed"),
        ("GET", "/api/v1/accounts/me"),
        ("POST", "/api/v1/posts"),
        ("POST", "/api/v1/follows"),
        ("GET", "/api/v1/notifications"),
        ("GET", "/api/v1/users/1"),
        ("PUT", "/api/v1/posts/1/like"),
        ("DELETE", "/api/v1/sessions/current"),
    ]:
        status, doc, headers = await anon.call(method, path, {})
        assert status == 401 and doc["error"]["code"] == "unauthorized", (method, path)
        assert headers["WWW-Authenticate"].startswith("Bearer")
    status, doc, _ = await anon.call(
        "POST", "/api/v1/accounts", {"username": ".bad", "password": "x" * 9}
    )
    assert status == 400 and doc["error"]["code"] == "bad_username"
    status, doc, _ = await anon.call(
        "POST", "/api/v1/accounts", {"username": "ok", "password": "short"}
    )
    assert status == 400 and doc["error"]["code"] == "bad_password"
    status, doc, _ = await anon.call(
        "POST", "/api/v1/accounts", {"username": "TESTER", "password": "x" * 12}
    )
    assert status == 409  # usernames compare without case
    status, doc, _ = await anon.call(
        "POST", "/api/v1/sessions", {"username": "tester", "password": "nope-nope"}
    )
    assert status == 401 and doc["error"]["code"] == "bad_credentials"
    # The token is stored hashed: the table holds no usable token.
    async with env.ctx.db.snapshot() as conn:
        stored = [r[0] for r in await conn.exec_driver_sql("SELECT token_sha256 FROM sessions")]
    assert env.token not in stored and len(stored[0]) == 64
    _, me = await user(env, "carol")
    status, doc, _ = await me.call(
        "PATCH", "/api/v1/accounts/me", {"bio": "hi", "is_private": True}
    )
    assert status == 200 and doc["bio"] == "hi" and doc["is_private"] is True
    status, doc, _ = await me.call("PATCH", "/api/v1/accounts/me", {"bio": "x" * 151})
    assert status == 400
    status, _, _ = await me.call("DELETE", "/api/v1/sessions/current")
    assert status == 204
    status, doc, _ = await me.call("GET", "/api/v1/accounts/me")
    assert status == 401  # revoked

    # A session older than session_days_max (90) answers 401 like a revoked one.
    _, old = await user(env, "dora")
    assert (await old.call("GET", "/api/v1/accounts/me"))[0] == 200
    async with env.ctx.db.transaction() as conn:
        await conn.execute(
            sessions.update()
            .where(sessions.c.token_sha256 == hashlib.sha256(str(old.token).encode()).hexdigest())
            .values(created_unix_s=time.time() - 91 * 86400)
        )
    status, doc, _ = await old.call("GET", "/api/v1/accounts/me")
    assert status == 401 and doc["error"]["code"] == "unauthorized", doc


async def test_posts_feed_likes_comments_notifications_and_delete(social_env: MediaEnv) -> None:
    env = social_env
    alice_id, alice = await user(env, "alice")
    bob_id, bob = await user(env, "bob")
    dan_id, dan = await user(env, "dan")
    for c in (bob, dan):
        status, doc, _ = await c.call("POST", "/api/v1/follows", {"followee_id": alice_id})
        assert status == 201 and doc["state"] == "following"
    post = await alice.post("sunset #Beach with @bob", n=2)
    assert len(post["media"]) == 2 and post["status"] == "live"
    assert post["author"]["username"] == "alice" and isinstance(post["post_id"], str)
    assert post["post_id"] in await alice.feed_ids()  # the author sees it at once
    for c in (bob, dan):
        for _ in range(100):
            if post["post_id"] in await c.feed_ids():
                break
        assert post["post_id"] in await c.feed_ids()
    # Someone else's media cannot be posted; bad input is a 400.
    theirs = await bob.photo()
    status, doc, _ = await alice.call("POST", "/api/v1/posts", {"media_ids": [theirs]})
    assert status == 400 and doc["error"]["code"] == "bad_media"
    mine = await alice.photo(99)
    status, doc, _ = await alice.call(
        "POST", "/api/v1/posts", {"media_ids": [mine], "caption": "x" * 2201}
    )
    assert status == 400
    status, doc, _ = await alice.call("POST", "/api/v1/posts", {"media_ids": []})
    assert status == 400
    status, doc, _ = await alice.call("POST", "/api/v1/posts", {"media_ids": [mine] * 2})
    assert status == 400
    # Likes are idempotent; the viewer's flags are exact.
    pid = post["post_id"]
    for _ in range(2):
        status, doc, _ = await bob.call("PUT", f"/api/v1/posts/{pid}/like")
        assert status == 200 and doc["viewer_has_liked"] is True and doc["like_count"] == 1
    await dan.call("PUT", f"/api/v1/posts/{pid}/like")
    await dan.call("PUT", f"/api/v1/posts/{pid}/save")
    status, doc, _ = await dan.call("GET", f"/api/v1/posts/{pid}")
    assert doc["like_count"] == 2 and doc["viewer_has_saved"] and doc["viewer_has_liked"]
    status, doc, _ = await alice.call("GET", f"/api/v1/posts/{pid}")
    assert doc["viewer_has_liked"] is False and doc["viewer_has_saved"] is False
    # Comments with one level of replies.
    status, c1, _ = await bob.call("POST", f"/api/v1/posts/{pid}/comments", {"text": "wow"})
    assert status == 201
    status, r1, _ = await alice.call(
        "POST", f"/api/v1/posts/{pid}/comments", {"text": "thanks", "parent_id": c1["comment_id"]}
    )
    assert status == 201
    status, doc, _ = await bob.call(
        "POST", f"/api/v1/posts/{pid}/comments", {"text": "deep", "parent_id": r1["comment_id"]}
    )
    assert status == 400 and doc["error"]["code"] == "bad_parent"
    status, doc, _ = await dan.call("GET", f"/api/v1/posts/{pid}/comments")
    assert [c["text"] for c in doc["comments"]] == ["wow"] and doc["comments"][0][
        "reply_count"
    ] == 1
    status, doc, _ = await dan.call(
        "GET", f"/api/v1/posts/{pid}/comments", parent_id=c1["comment_id"]
    )
    assert [c["text"] for c in doc["comments"]] == ["thanks"]
    # Notifications, grouped.
    status, doc, _ = await alice.call("GET", "/api/v1/notifications")
    likes = [n for n in doc["notifications"] if n["kind"] == "like"]
    assert likes and likes[0]["actors_total"] == 2 and "and 1 other liked" in likes[0]["text"]
    follows = [n for n in doc["notifications"] if n["kind"] == "follow"]
    assert follows[0]["actors_total"] == 2
    assert doc["unread_count"] >= 5
    status, doc, _ = await bob.call("GET", "/api/v1/notifications")
    assert any(n["kind"] == "mention" for n in doc["notifications"])
    status, doc, _ = await alice.call("POST", "/api/v1/notifications/read", {})
    status, doc, _ = await alice.call("GET", "/api/v1/notifications")
    assert doc["unread_count"] == 0
    # A delete takes the post out of every feed and its photo URLs answer 404.
    url = post["media"][0]["variants"]["640"]["formats"]["jpeg"]
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
    status, _, _ = await dan.call("DELETE", f"/api/v1/posts/{pid}")
    assert status == 404  # not the author's
    status, _, _ = await alice.call("DELETE", f"/api/v1/posts/{pid}")
    assert status == 204
    for c in (alice, bob, dan):
        assert pid not in await c.feed_ids()
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 404
    status, _, _ = await bob.call("GET", f"/api/v1/posts/{pid}")
    assert status == 404
    assert bob_id != dan_id


async def test_privacy_blocks_unfollow_and_rate_limits(social_env: MediaEnv) -> None:
    env = social_env
    pat_id, pat = await user(env, "pat", private=True)
    eve_id, eve = await user(env, "eve")
    secret = await pat.post("private life")
    sid = secret["post_id"]
    # A non-follower sees none of a private account's posts.
    status, doc, _ = await eve.call("GET", f"/api/v1/users/{pat_id}/posts")
    assert status == 403 and doc["error"]["code"] == "private_account"
    status, _, _ = await eve.call("GET", f"/api/v1/posts/{sid}")
    assert status == 404
    status, _, _ = await eve.call("PUT", f"/api/v1/posts/{sid}/like")
    assert status == 404
    status, doc, _ = await eve.call("POST", "/api/v1/follows", {"followee_id": pat_id})
    assert doc["state"] == "requested"
    assert sid not in await eve.feed_ids()
    status, doc, _ = await pat.call("GET", "/api/v1/follow_requests")
    assert [r["user"]["user_id"] for r in doc["requests"]] == [eve_id]
    status, _, _ = await pat.call("POST", f"/api/v1/follow_requests/{eve_id}/approve")
    assert status == 204
    assert sid in await eve.feed_ids()  # the follow backfilled it
    status, doc, _ = await eve.call("GET", f"/api/v1/users/{pat_id}/posts")
    assert status == 200 and [p["post_id"] for p in doc["posts"]] == [sid]
    # Unfollow is strongly consistent: the next read no longer shows the followee.
    status, _, _ = await eve.call("DELETE", f"/api/v1/follows/{pat_id}")
    assert status == 204
    assert sid not in await eve.feed_ids()
    # Blocks: the blocked user sees nothing of the blocker and cannot follow, like, comment.
    _, zed = await user(env, "zed")
    open_post = await eve.post("hello")
    oid = open_post["post_id"]
    await zed.call("POST", "/api/v1/follows", {"followee_id": eve_id})
    zed_id = (await zed.call("GET", "/api/v1/accounts/me"))[1]["user_id"]
    status, _, _ = await eve.call("POST", "/api/v1/blocks", {"user_id": zed_id})
    assert status == 201
    assert oid not in await zed.feed_ids()
    for method, path, body in [
        ("GET", f"/api/v1/users/{eve_id}", None),
        ("POST", "/api/v1/follows", {"followee_id": eve_id}),
        ("PUT", f"/api/v1/posts/{oid}/like", None),
        ("POST", f"/api/v1/posts/{oid}/comments", {"text": "hey"}),
        ("GET", f"/api/v1/posts/{oid}", None),
    ]:
        status, _, _ = await zed.call(method, path, body)
        assert status == 404, (method, path)
    # Rate limit: 4 posts a day in this config (eve has posted 1); the 5th is a 429.
    for i in range(3):
        status, doc, headers = await eve.call(
            "POST", "/api/v1/posts", {"media_ids": [await eve.photo(i)]}
        )
        assert status == 201 and headers["X-RateLimit-Limit"] == "4"
        assert headers["X-RateLimit-Remaining"] == str(2 - i)
    media = await eve.photo(200)
    status, doc, headers = await eve.call("POST", "/api/v1/posts", {"media_ids": [media]})
    assert status == 429 and doc["error"]["code"] == "rate_limited"
    assert headers["X-RateLimit-Remaining"] == "0" and int(headers["Retry-After"]) > 0
    async with env.ctx.db.snapshot() as conn:
        attached = await conn.exec_driver_sql(
            f"SELECT attached_unix_s FROM media WHERE media_id = {int(media)}"
        )
        assert attached.scalar_one() is None  # the refused post attached nothing


async def test_feed_cursor_and_bad_parameters(social_env: MediaEnv) -> None:
    env = social_env
    _, amy = await user(env, "amy")
    made = [(await amy.post(f"p{i}"))["post_id"] for i in range(4)]
    status, doc, _ = await amy.call("GET", "/api/v1/feed", limit="3")
    assert [p["post_id"] for p in doc["posts"]] == made[::-1][:3] and doc["has_more"]
    cursor = doc["next_cursor"]
    status, doc, _ = await amy.call("GET", "/api/v1/feed", limit="3", cursor=cursor)
    assert [p["post_id"] for p in doc["posts"]] == [made[0]] and not doc["has_more"]
    for params in ({"limit": "0"}, {"limit": "51"}, {"cursor": "garbage!"}, {"mode": "x"}):
        status, doc, _ = await amy.call("GET", "/api/v1/feed", **params)
        assert status == 400 and "error" in doc, params
    status, doc, _ = await amy.call("GET", "/api/v1/feed", mode="ranked", limit="2")
    assert status == 200 and len(doc["posts"]) == 2 and doc["has_more"]
    status, doc2, _ = await amy.call(
        "GET", "/api/v1/feed", mode="ranked", limit="2", cursor=doc["next_cursor"]
    )
    shown = [p["post_id"] for p in doc["posts"] + doc2["posts"]]
    assert sorted(shown) == sorted(made)


async def test_a_post_waits_for_its_media_then_reaches_the_followers(tmp_path: Path) -> None:
    async with social_cluster("sqlite", tmp_path, worker=False) as cluster:
        env = cluster.env
        alice_id, alice = await user(env, "alice")
        _, bob = await user(env, "bob")
        status, _, _ = await bob.call("POST", "/api/v1/follows", {"followee_id": alice_id})
        assert status == 201
        media_id = await alice.photo(ready=False)  # no worker yet: it stays processing
        status, doc, _ = await alice.call("GET", f"/api/v1/media/{media_id}")
        assert status == 200 and doc["status"] == "processing"
        status, post, _ = await alice.call("POST", "/api/v1/posts", {"media_ids": [media_id]})
        assert status == 201 and post["status"] == "processing", post
        pid = post["post_id"]
        assert pid in await alice.feed_ids()  # the author sees it at once
        await asyncio.sleep(0.3)  # the publish job has looked, and deferred
        assert pid not in await bob.feed_ids()
        env.start_worker()

        async def reached_bob() -> bool:
            return pid in await bob.feed_ids()

        await eventually(reached_bob, timeout_s=30, what="the post to reach the follower")
        status, doc, _ = await alice.call("GET", f"/api/v1/posts/{pid}")
        assert status == 200 and doc["status"] == "live" and len(doc["media"]) == 1
