"""Direct messages through the real API on SQLite and PostgreSQL: a recipient who was away
catches up exactly once and in order; a retried send makes one message; requests until
accepted; blocks end delivery both ways; reactions, unsend and delete-for-me reach catch-up;
the inbox orders by activity with unread counts; bad input is a 4xx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from social.config import SocialConfig
from tests.api.conftest import MediaEnv
from tests.social.conftest import Client, social_cluster, user

MESSAGES_PER_HOUR = 30


@pytest.fixture(params=["sqlite", "postgresql"])
async def dm_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaEnv]:
    social = SocialConfig(messages_per_hour_max=MESSAGES_PER_HOUR)
    async with social_cluster(request.param, tmp_path, worker=False, social=social) as cluster:
        yield cluster.env


async def send(client: Client, body: dict[str, Any], thread_id: str | None = None) -> Any:
    path = "/api/v1/messages" if thread_id is None else f"/api/v1/threads/{thread_id}/messages"
    status, doc, _ = await client.call("POST", path, body)
    assert status in (200, 201), doc
    return doc


async def catch_up(client: Client, thread_id: str, after: int = 0, limit: int = 3) -> Any:
    """Every change after `after`, page by page (small pages: paging is exercised)."""
    out: list[dict[str, Any]] = []
    while True:
        status, doc, _ = await client.call(
            "GET",
            f"/api/v1/threads/{thread_id}/messages",
            after_seq=str(after),
            limit=str(limit),
        )
        assert status == 200, doc
        out += doc["messages"]
        after = doc["next_after_seq"]
        if not doc["has_more"]:
            return out, after


async def follow(client: Client, user_id: str) -> None:
    status, doc, _ = await client.call("POST", "/api/v1/follows", {"followee_id": user_id})
    assert status in (200, 201), doc


async def test_offline_recipient_catches_up_once_in_order(dm_env: MediaEnv) -> None:
    env = dm_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    await follow(bea, ann_id)
    first = await send(ann, {"recipient_ids": [bea_id], "client_id": "m-0", "text": "hi 0"})
    assert first["seq"] == 1 and first["created"] is True
    thread = first["thread_id"]
    # Concurrent sends from both sides: one order for everyone, no gaps in seq.
    sends = [
        send(ann if i % 2 else bea, {"client_id": f"m-{i}", "text": f"hi {i}"}, thread)
        for i in range(1, 11)
    ]
    await asyncio.gather(*sends)
    seen_by_bea, cursor = await catch_up(bea, thread)
    seen_by_ann, _ = await catch_up(ann, thread)
    assert [m["seq"] for m in seen_by_bea] == list(range(1, 12))
    assert [m["message_id"] for m in seen_by_bea] == [m["message_id"] for m in seen_by_ann]
    assert len({m["client_id"] for m in seen_by_bea}) == 11
    # Resuming from the cursor gives nothing twice, then just what is new.
    assert (await catch_up(bea, thread, cursor))[0] == []
    await send(ann, {"client_id": "late", "text": "one more"}, thread)
    new, _ = await catch_up(bea, thread, cursor)
    assert [m["client_id"] for m in new] == ["late"] and new[0]["seq"] == 12


async def test_retried_send_makes_one_message(dm_env: MediaEnv) -> None:
    env = dm_env
    _, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    cid_id, _ = await user(env, "cid")
    body = {"recipient_ids": [bea_id], "client_id": "retry-1", "text": "once"}
    first = await send(ann, body)
    again = await send(ann, body)
    assert again["message_id"] == first["message_id"] and again["created"] is False
    # Even raced: the unique (thread, sender, client id) lets one win.
    racing = await asyncio.gather(*(send(ann, {**body, "client_id": "retry-2"}) for _ in range(4)))
    assert len({d["message_id"] for d in racing}) == 1
    # A group's first message retried makes one group.
    group = {"recipient_ids": [bea_id, cid_id], "client_id": "g-1", "text": "all", "title": "us"}
    g1, g2 = await send(ann, group), await send(ann, group)
    assert g1["thread_id"] == g2["thread_id"] and g1["message_id"] == g2["message_id"]
    messages, _ = await catch_up(bea, first["thread_id"])
    assert [m["client_id"] for m in messages] == ["retry-1", "retry-2"]


async def test_requests_until_accepted_and_reply(dm_env: MediaEnv) -> None:
    env = dm_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    sent = await send(ann, {"recipient_ids": [bea_id], "client_id": "1", "text": "hello?"})
    thread = sent["thread_id"]

    async def folder(client: Client, name: str) -> list[str]:
        status, doc, _ = await client.call("GET", "/api/v1/threads", folder=name)
        assert status == 200, doc
        return [t["thread_id"] for t in doc["threads"]]

    assert await folder(bea, "requests") == [thread] and await folder(bea, "inbox") == []
    assert await folder(ann, "inbox") == [thread]
    status, _, _ = await bea.call("POST", f"/api/v1/threads/{thread}/accept")
    assert status == 204
    assert await folder(bea, "inbox") == [thread] and await folder(bea, "requests") == []
    # Unread counts and the last message's preview.
    await send(ann, {"client_id": "2", "text": "x" * 500}, thread)
    status, doc, _ = await bea.call("GET", "/api/v1/threads")
    (t,) = doc["threads"]
    assert t["unread_count"] == 2 and len(t["last_message"]["text"]) == 100
    status, doc, _ = await bea.call("POST", f"/api/v1/threads/{thread}/read", {"seq": 1})
    assert status == 200 and doc["last_read_seq"] == 1
    status, doc, _ = await bea.call("GET", f"/api/v1/threads/{thread}")
    assert doc["unread_count"] == 1
    assert {m["user_id"]: m["last_read_seq"] for m in doc["members"]} == {ann_id: 2, bea_id: 1}


async def test_blocked_users_cannot_deliver(dm_env: MediaEnv) -> None:
    env = dm_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    cid_id, cid = await user(env, "cid")
    sent = await send(ann, {"recipient_ids": [bea_id], "client_id": "1", "text": "hi"})
    thread = sent["thread_id"]
    group = await send(
        ann, {"recipient_ids": [bea_id, cid_id], "client_id": "g", "text": "all", "title": "g"}
    )
    assert (await bea.call("POST", "/api/v1/blocks", {"user_id": ann_id}))[0] == 201
    for who, body, where in (
        (ann, {"client_id": "2", "text": "still?"}, thread),
        (bea, {"client_id": "3", "text": "no"}, thread),
    ):
        status, doc, _ = await who.call("POST", f"/api/v1/threads/{where}/messages", body)
        assert status == 403 and doc["error"]["code"] == "blocked"
    status, doc, _ = await ann.call(
        "POST", "/api/v1/messages", {"recipient_ids": [bea_id], "client_id": "4", "text": "x"}
    )
    assert status == 403 and doc["error"]["code"] == "blocked"
    # In the group ann still talks to cid, and bea sees nothing of ann (nor ann of bea).
    await send(ann, {"client_id": "g2", "text": "to cid"}, group["thread_id"])
    await send(bea, {"client_id": "g3", "text": "bea here"}, group["thread_id"])
    by_bea = [m["client_id"] for m in (await catch_up(bea, group["thread_id"]))[0]]
    by_ann = [m["client_id"] for m in (await catch_up(ann, group["thread_id"]))[0]]
    by_cid = [m["client_id"] for m in (await catch_up(cid, group["thread_id"]))[0]]
    assert by_bea == ["g3"] and by_ann == ["g", "g2"] and by_cid == ["g", "g2", "g3"]
    # Lifted, the history shows again.
    assert (await bea.call("DELETE", f"/api/v1/blocks/{ann_id}"))[0] == 204
    assert [m["client_id"] for m in (await catch_up(bea, thread))[0]] == ["1"]


async def test_reactions_unsend_and_delete_for_me(dm_env: MediaEnv) -> None:
    env = dm_env
    _, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    one = await send(ann, {"recipient_ids": [bea_id], "client_id": "1", "text": "one"})
    thread = one["thread_id"]
    two = await send(ann, {"client_id": "2", "text": "two"}, thread)
    _, cursor = await catch_up(bea, thread)
    base = f"/api/v1/threads/{thread}/messages"
    status, doc, _ = await bea.call("PUT", f"{base}/{one['message_id']}/reaction", {"emoji": "❤"})
    assert status == 200, doc
    status, doc, _ = await bea.call("DELETE", f"{base}/{two['message_id']}")
    assert status == 403 and doc["error"]["code"] == "not_sender"
    assert (await ann.call("DELETE", f"{base}/{two['message_id']}"))[0] == 200
    changed, _ = await catch_up(bea, thread, cursor)
    assert [(m["seq"], m["unsent"], m["text"]) for m in changed] == [
        (1, False, "one"),
        (2, True, None),
    ]
    assert changed[0]["reactions"] == [{"user_id": bea_id, "emoji": "❤"}]
    assert (await bea.call("POST", f"{base}/{one['message_id']}/hide"))[0] == 204
    assert [m["seq"] for m in (await catch_up(bea, thread))[0]] == [2]
    assert [m["seq"] for m in (await catch_up(ann, thread))[0]] == [1, 2]


@pytest.mark.parametrize(
    "body",
    [
        {"recipient_ids": [], "client_id": "1", "text": "x"},
        {"recipient_ids": ["abc"], "client_id": "1", "text": "x"},
        {"recipient_ids": ["1"], "client_id": "", "text": "x"},
        {"recipient_ids": ["1"], "client_id": "1", "text": "   "},
        {"recipient_ids": ["1"], "client_id": "1", "kind": "sticker"},
        {"recipient_ids": ["1"], "client_id": "1", "kind": "media", "media_id": 5},
    ],
)
async def test_bad_sends_are_4xx(dm_env: MediaEnv, body: dict[str, Any]) -> None:
    _, ann = await user(dm_env, "ann")
    status, doc, _ = await ann.call("POST", "/api/v1/messages", body)
    assert status == 400 and doc["error"]["code"], doc


async def test_strangers_see_no_thread(dm_env: MediaEnv) -> None:
    env = dm_env
    _, ann = await user(env, "ann")
    bea_id, _ = await user(env, "bea")
    _, eve = await user(env, "eve")
    sent = await send(ann, {"recipient_ids": [bea_id], "client_id": "1", "text": "private"})
    for method, path in (
        ("GET", f"/api/v1/threads/{sent['thread_id']}"),
        ("GET", f"/api/v1/threads/{sent['thread_id']}/messages"),
        ("POST", f"/api/v1/threads/{sent['thread_id']}/read"),
    ):
        status, doc, _ = await eve.call(method, path, {} if method == "POST" else None)
        assert status == 404, (path, doc)
    status, doc, _ = await eve.call(
        "POST", f"/api/v1/threads/{sent['thread_id']}/messages", {"client_id": "x", "text": "x"}
    )
    assert status == 404


async def test_sends_are_rate_limited_per_sender(dm_env: MediaEnv) -> None:
    env = dm_env
    _, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    first = await send(ann, {"recipient_ids": [bea_id], "client_id": "0", "text": "x"})
    for i in range(1, MESSAGES_PER_HOUR):
        await send(ann, {"client_id": str(i), "text": "x"}, first["thread_id"])
    status, doc, headers = await ann.call(
        "POST", f"/api/v1/threads/{first['thread_id']}/messages", {"client_id": "z", "text": "x"}
    )
    assert status == 429 and doc["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) > 0
    # Another sender is not affected; the refused message was not stored.
    await send(bea, {"client_id": "b", "text": "fine"}, first["thread_id"])
    messages, _ = await catch_up(bea, first["thread_id"], limit=100)
    assert len(messages) == MESSAGES_PER_HOUR + 1


async def test_media_and_shared_posts_reach_the_members(dm_env: MediaEnv) -> None:
    env = dm_env
    env.start_worker()
    _, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    _, eve = await user(env, "eve")
    media_id = await ann.photo()
    post = await ann.post("shared")
    sent = await send(
        ann,
        {"recipient_ids": [bea_id], "client_id": "m", "kind": "media", "media_id": media_id},
    )
    await send(
        ann, {"client_id": "p", "kind": "post", "post_id": post["post_id"]}, sent["thread_id"]
    )
    got, _ = await catch_up(bea, sent["thread_id"])
    photo, shared = got
    assert photo["kind"] == "media" and photo["media"]["media_id"] == media_id
    url = next(iter(photo["media"]["urls"].values()))
    assert "?e=" in url and "&s=" in url, url  # signed, expiring
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200 and r.headers["Cache-Control"].startswith("private")
    assert shared["kind"] == "post" and shared["post_id"] == post["post_id"]
    # Someone else's media cannot be sent; a stranger still cannot see the thread.
    status, doc, _ = await eve.call(
        "POST",
        "/api/v1/messages",
        {"recipient_ids": [bea_id], "client_id": "x", "kind": "media", "media_id": media_id},
    )
    assert status == 404, doc
