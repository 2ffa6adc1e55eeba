"""Stories through the real API (a local cluster with a media worker) on SQLite and
PostgreSQL: a story's media travels only through signed, expiring URLs; the tray lists the
followed author with seen state; a view is idempotent and the author's viewer list fills;
a reply becomes a DM quoting the story, and replies turned off or a block refuse it;
close-friends stories reach only the list; highlights; bad input is a 4xx; and the sweep,
past the grace hour, has the media workers delete an expired story's needles (its signed
URL turns 404) but keeps a highlighted story's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from social import stories_schema, story_sweep
from social.config import SocialConfig
from social.stories_schema import STORY_LIFETIME_S
from tests.api.conftest import MediaEnv
from tests.social.conftest import Client, social_cluster, user
from transformer import media_store


@pytest.fixture(params=["sqlite", "postgresql"])
async def story_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaEnv]:
    social = SocialConfig(stories_per_day_max=3, story_views_flush_interval_ms=50)
    async with social_cluster(request.param, tmp_path, worker=True, social=social) as cluster:
        yield cluster.env


async def ok(client: Client, method: str, path: str, body: Any = None, **q: str) -> Any:
    status, doc, _ = await client.call(method, path, body, **q)
    assert status in (200, 201, 204), (status, doc)
    return doc


async def test_stories_end_to_end(story_env: MediaEnv) -> None:
    env = story_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    cid_id, cid = await user(env, "cid")
    for who in (bea, cid):
        await ok(who, "POST", "/api/v1/follows", {"followee_id": ann_id})
    story = await ok(ann, "POST", "/api/v1/stories", {"media_id": await ann.photo(20)})
    inner = await ok(
        ann,
        "POST",
        "/api/v1/stories",
        {"media_id": await ann.photo(60), "audience": "close_friends", "can_reply": False},
    )
    await ok(ann, "POST", "/api/v1/close_friends", {"user_id": cid_id})
    # Signed, expiring URLs only.
    urls = list(story["media"]["urls"].values())
    assert urls and all("?e=" in u and "&s=" in u for u in urls), urls
    # The tray: bea sees one story, unseen; cid sees both.
    tray = await ok(bea, "GET", "/api/v1/stories/tray")
    assert [a["user_id"] for a in tray["authors"]] == [ann_id]
    assert [(s["story_id"], s["seen"]) for s in tray["authors"][0]["stories"]] == [
        (story["story_id"], False)
    ]
    tray = await ok(cid, "GET", "/api/v1/stories/tray")
    assert [s["story_id"] for s in tray["authors"][0]["stories"]] == [
        story["story_id"],
        inner["story_id"],
    ]
    status, _, _ = await bea.call("GET", f"/api/v1/stories/{inner['story_id']}")
    assert status == 404
    # Views: idempotent; the author's count and list.
    seen = await ok(bea, "POST", f"/api/v1/stories/{story['story_id']}/seen")
    again = await ok(bea, "POST", f"/api/v1/stories/{story['story_id']}/seen")
    assert (seen["first_view"], again["first_view"]) == (True, False)
    await ok(cid, "POST", f"/api/v1/stories/{story['story_id']}/seen")
    tray = await ok(bea, "GET", "/api/v1/stories/tray")
    assert tray["authors"][0]["stories"][0]["seen"] is True
    for _ in range(200):  # the flusher writes the list within its interval
        viewers = await ok(ann, "GET", f"/api/v1/stories/{story['story_id']}/viewers")
        if len(viewers["viewers"]) == 2:
            break
        await asyncio.sleep(0.05)
    assert viewers["view_count"] == 2
    assert sorted(v["user_id"] for v in viewers["viewers"]) == sorted([bea_id, cid_id])
    status, _, _ = await bea.call("GET", f"/api/v1/stories/{story['story_id']}/viewers")
    assert status == 404
    # A reply is a DM in the 1:1 thread, quoting the story.
    sent = await ok(
        bea,
        "POST",
        f"/api/v1/stories/{story['story_id']}/replies",
        {"client_id": "r1", "text": "wow"},
    )
    assert sent["kind"] == "story_reply" and sent["story_id"] == story["story_id"]
    threads = await ok(ann, "GET", "/api/v1/threads", folder="requests")
    assert [t["thread_id"] for t in threads["threads"]] == [sent["thread_id"]]
    assert threads["threads"][0]["last_message"]["story_id"] == story["story_id"]
    status, doc, _ = await cid.call(
        "POST", f"/api/v1/stories/{inner['story_id']}/replies", {"client_id": "r", "text": "x"}
    )
    assert (status, doc["error"]["code"]) == (403, "replies_off")
    await ok(ann, "POST", "/api/v1/blocks", {"user_id": bea_id})
    status, _, _ = await bea.call(
        "POST", f"/api/v1/stories/{story['story_id']}/replies", {"client_id": "r2", "text": "?"}
    )
    assert status == 404  # blocked: the story is not there for bea at all
    tray = await ok(bea, "GET", "/api/v1/stories/tray")
    assert tray["authors"] == []
    # Highlights: the owner's; others see them as they saw the stories.
    made = await ok(
        ann,
        "POST",
        "/api/v1/highlights",
        {"title": "best", "story_ids": [story["story_id"], inner["story_id"]]},
    )
    listed = await ok(cid, "GET", f"/api/v1/users/{ann_id}/highlights")
    assert [len(h["stories"]) for h in listed["highlights"]] == [2]
    status, _, _ = await bea.call("GET", f"/api/v1/highlights/{made['highlight_id']}")
    assert status == 404  # blocked
    renamed = await ok(
        ann, "PATCH", f"/api/v1/highlights/{made['highlight_id']}", {"title": "better"}
    )
    assert renamed["title"] == "better"
    await ok(ann, "DELETE", f"/api/v1/highlights/{made['highlight_id']}")
    # Bad input: 4xx, nothing written.
    for body in ({}, {"media_id": "x"}, {"media_id": story["story_id"], "audience": "all"}):
        status, doc, _ = await ann.call("POST", "/api/v1/stories", body)
        assert status == 400, (body, doc)
    status, doc, _ = await ann.call("POST", "/api/v1/stories", {"media_id": await ann.photo(99)})
    assert status == 201
    status, doc, headers = await ann.call(
        "POST", "/api/v1/stories", {"media_id": await ann.photo(120)}
    )
    assert status == 429 and headers["X-RateLimit-Limit"] == "3", doc


@pytest.fixture
async def sweep_env(tmp_path: Path) -> AsyncIterator[MediaEnv]:
    async with social_cluster("sqlite", tmp_path, worker=False) as cluster:
        cluster.env.start_worker(expire_interval_s=0.1)
        yield cluster.env


async def fetch_status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        await r.read()
        return r.status


async def test_the_sweep_deletes_needles_after_grace_but_not_highlighted(
    sweep_env: MediaEnv,
) -> None:
    env = sweep_env
    _, ann = await user(env, "ann")
    kept = await ok(ann, "POST", "/api/v1/stories", {"media_id": await ann.photo(30)})
    gone = await ok(ann, "POST", "/api/v1/stories", {"media_id": await ann.photo(90)})
    await ok(ann, "POST", "/api/v1/highlights", {"title": "k", "story_ids": [kept["story_id"]]})
    kept_url = next(iter(kept["media"]["urls"].values()))
    gone_url = next(iter(gone["media"]["urls"].values()))
    assert await fetch_status(kept_url) == 200 and await fetch_status(gone_url) == 200
    # Both stories made a day and the grace hour ago (the rows moved back in time), then the
    # sweep as the API's leased loop runs it.
    config = SocialConfig()
    back = STORY_LIFETIME_S + config.story_reclaim_grace_s + 1
    t = stories_schema.stories.c
    async with env.ctx.db.transaction() as conn:
        await conn.execute(
            stories_schema.stories.update().values(
                created_unix_s=t.created_unix_s - back, expires_unix_s=t.expires_unix_s - back
            )
        )
    swept = await story_sweep.sweep_once(env.ctx.db, config, now=time.time())
    assert swept.media_ids == (int(gone["media"]["media_id"]),)
    # The media workers' expiry deletes the needles, then marks the media expired.
    media_id = int(gone["media"]["media_id"])
    for _ in range(400):
        rows = await media_store.get(env.ctx.db, media_id)
        assert rows is not None
        if rows[0].status == media_store.MediaStatus.EXPIRED:
            break
        await asyncio.sleep(0.05)
    assert rows is not None and rows[0].status == media_store.MediaStatus.EXPIRED and rows[1] == []
    assert await fetch_status(gone_url) == 404  # the signed URL answers nothing now
    assert await fetch_status(kept_url) == 200  # the highlighted story's media stays


async def test_the_tray_the_viewers_and_close_friends_carry_account_documents(
    story_env: MediaEnv,
) -> None:
    env = story_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    cid_id, cid = await user(env, "cid")
    await ok(ann, "PATCH", "/api/v1/accounts/me", {"avatar_media_id": await ann.photo(40)})
    await ok(ann, "PATCH", "/api/v1/accounts/me", {"full_name": "Ann A."})
    first_pic = (await ann.me())["profile_pic_url"]
    assert first_pic and "?e=" not in first_pic  # a profile picture's URL is public
    for who in (bea, cid):
        await ok(who, "POST", "/api/v1/follows", {"followee_id": ann_id})
    story = await ok(ann, "POST", "/api/v1/stories", {"media_id": await ann.photo(20)})
    # The tray's author is the compact account document, ids and stories kept.
    tray = await ok(bea, "GET", "/api/v1/stories/tray")
    [author] = tray["authors"]
    assert {k: author[k] for k in ("user_id", "username", "full_name", "profile_pic_url")} == {
        "user_id": ann_id,
        "username": "ann",
        "full_name": "Ann A.",
        "profile_pic_url": first_pic,
    }
    assert (author["is_verified"], author["is_private"], author["has_unseen"]) == (
        False,
        False,
        True,
    )
    assert [s["story_id"] for s in author["stories"]] == [story["story_id"]]
    # Read fresh on every read: the cached tray carries a new picture at once.
    await ok(ann, "PATCH", "/api/v1/accounts/me", {"avatar_media_id": await ann.photo(80)})
    second_pic = (await ann.me())["profile_pic_url"]
    assert second_pic and second_pic != first_pic
    tray = await ok(bea, "GET", "/api/v1/stories/tray")
    assert tray["authors"][0]["profile_pic_url"] == second_pic
    # The viewer list: ids, times and paging as before, each viewer's document beside them.
    for who in (bea, cid):
        await ok(who, "POST", f"/api/v1/stories/{story['story_id']}/seen")
    for _ in range(200):  # the flusher writes the list within its interval
        viewers = await ok(ann, "GET", f"/api/v1/stories/{story['story_id']}/viewers")
        if len(viewers["viewers"]) == 2:
            break
        await asyncio.sleep(0.05)
    by_id = {v["user_id"]: v for v in viewers["viewers"]}
    assert set(by_id) == {bea_id, cid_id}
    assert (by_id[bea_id]["username"], by_id[cid_id]["username"]) == ("bea", "cid")
    assert by_id[bea_id]["profile_pic_url"] is None and by_id[bea_id]["viewed_at"]
    page = await ok(ann, "GET", f"/api/v1/stories/{story['story_id']}/viewers", limit="1")
    assert [v["username"] for v in page["viewers"]] == [by_id[min(by_id, key=int)]["username"]]
    assert page["has_more"] is True and page["next_cursor"] == min(by_id, key=int)
    # Close friends: the same documents.
    await ok(ann, "POST", "/api/v1/close_friends", {"user_id": cid_id})
    friends = await ok(ann, "GET", "/api/v1/close_friends")
    assert [(f["user_id"], f["username"]) for f in friends["users"]] == [(cid_id, "cid")]
    # A block: the id stays in the viewer list, the account's document does not.
    await ok(ann, "POST", "/api/v1/blocks", {"user_id": bea_id})
    viewers = await ok(ann, "GET", f"/api/v1/stories/{story['story_id']}/viewers")
    blocked = next(v for v in viewers["viewers"] if v["user_id"] == bea_id)
    assert set(blocked) == {"user_id", "viewed_at"}


@pytest.fixture(
    params=[("sqlite", False), ("sqlite", True), ("postgresql", False), ("postgresql", True)],
    ids=["sqlite-embedded", "sqlite-redis", "pg-embedded", "pg-redis"],
)
async def tray_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaEnv]:
    """Each database with each story store; the cache far longer than the test, so only a
    drop can make the tray change."""
    kind, redis = request.param
    social = SocialConfig(story_tray_cache_s_max=3600)
    async with social_cluster(kind, tmp_path, worker=True, redis=redis, social=social) as c:
        yield c.env


async def tray_authors(client: Client) -> list[str]:
    return [a["user_id"] for a in (await ok(client, "GET", "/api/v1/stories/tray"))["authors"]]


async def test_follows_and_blocks_drop_the_cached_tray_at_once(tray_env: MediaEnv) -> None:
    env = tray_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    await ok(ann, "POST", "/api/v1/stories", {"media_id": await ann.photo(20)})
    await ok(bea, "POST", "/api/v1/stories", {"media_id": await bea.photo(40)})
    # bea's tray is cached with ann absent (bea follows no one yet): a follow shows her.
    assert await tray_authors(bea) == [bea_id]
    await ok(bea, "POST", "/api/v1/follows", {"followee_id": ann_id})
    assert await tray_authors(bea) == [bea_id, ann_id]
    # Cached with ann in it: an unfollow takes her out at the next read.
    assert await tray_authors(bea) == [bea_id, ann_id]
    await ok(bea, "DELETE", f"/api/v1/follows/{ann_id}")
    assert await tray_authors(bea) == [bea_id]
    # A block, either way, ends the follow: the tray built before it must not come back
    # with the unblock (the cached tray's block filter no longer hides anyone then).
    await ok(bea, "POST", "/api/v1/follows", {"followee_id": ann_id})
    await ok(ann, "POST", "/api/v1/follows", {"followee_id": bea_id})
    assert await tray_authors(bea) == [bea_id, ann_id]
    assert await tray_authors(ann) == [ann_id, bea_id]
    await ok(ann, "POST", "/api/v1/blocks", {"user_id": bea_id})
    assert await tray_authors(bea) == [bea_id]
    assert await tray_authors(ann) == [ann_id]
    await ok(ann, "DELETE", f"/api/v1/blocks/{bea_id}")
    assert await tray_authors(bea) == [bea_id]
    assert await tray_authors(ann) == [ann_id]
