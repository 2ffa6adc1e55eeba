"""Blocks through the real API: nothing reaches or notifies across a block in either
direction (replies, comments, mentions, tags, likes, follows); notifications from or about
the other side are hidden while the block stands; a tag or a follow answers as for a user
that does not exist; the author of a comment can always delete it."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import MediaEnv
from tests.social.conftest import Client, user

NO_SUCH_ID = "4611686018427387904"  # a well-formed id no user, post or comment has


async def notifications(client: Client) -> tuple[list[dict[str, Any]], int]:
    status, doc, _ = await client.call("GET", "/api/v1/notifications")
    assert status == 200, doc
    return doc["notifications"], doc["unread_count"]


def actors(groups: list[dict[str, Any]]) -> set[str]:
    return {a["user_id"] for g in groups for a in g["actors"]}


async def test_blocks_hold_in_every_direction(social_env: MediaEnv) -> None:
    env = social_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    cid_id, cid = await user(env, "cid")
    pid = (await ann.post("ann's"))["post_id"]
    bpid = (await bea.post("bea's"))["post_id"]
    cpid = (await cid.post("cid's"))["post_id"]

    async def comment(client: Client, post_id: str, text: str, parent: str | None = None) -> Any:
        body = {"text": text} if parent is None else {"text": text, "parent_id": parent}
        return await client.call("POST", f"/api/v1/posts/{post_id}/comments", body)

    # Before the block cid reaches bea every way, and ann mentions bea on cid's post.
    _, c_bea, _ = await comment(bea, pid, "bea on ann's post")
    _, c_cid, _ = await comment(cid, pid, "cid on ann's post")
    for client in (ann, cid):
        assert (await client.call("PUT", f"/api/v1/posts/{bpid}/like"))[0] == 200
    status, c_on_bea, _ = await comment(cid, bpid, "cid on bea's post")
    assert status == 201
    _, c_on_bea2, _ = await comment(cid, bpid, "another one")
    assert (await comment(cid, pid, "hello @bea"))[0] == 201
    assert (await comment(ann, cpid, "look @bea"))[0] == 201
    assert (await cid.call("POST", "/api/v1/follows", {"followee_id": bea_id}))[0] == 201
    groups, unread = await notifications(bea)
    assert cid_id in actors(groups) and any(g["post_id"] == cpid for g in groups)
    assert unread == 7  # 2 likes, 2 comments, 2 mentions, 1 follow

    assert (await bea.call("POST", "/api/v1/blocks", {"user_id": cid_id}))[0] == 201

    # What cid did, and ann's mention on cid's post, is hidden from bea's list and count;
    # ann's like stays, alone in its group.
    groups, unread = await notifications(bea)
    assert [(g["kind"], g["post_id"], g["actors_total"]) for g in groups] == [("like", bpid, 1)]
    assert actors(groups) == {ann_id} and unread == 1

    # Replies across the block, either way, answer as a reply to no comment at all.
    nothing = await comment(cid, pid, "x", NO_SUCH_ID)
    assert nothing[0] == 400 and nothing[1]["error"]["code"] == "bad_parent"
    for client, parent in ((cid, c_bea["comment_id"]), (bea, c_cid["comment_id"])):
        status, doc, _ = await comment(client, pid, "reply", parent)
        assert (status, doc) == (nothing[0], nothing[1])
    # A mention of bea in a comment or a caption by cid notifies nobody.
    assert (await comment(cid, pid, "@bea see this"))[0] == 201
    # Tagging answers exactly as tagging no user, and stores nothing.
    media = await cid.photo(33)
    tags = {}
    for tagged in (NO_SUCH_ID, bea_id):
        status, doc, _ = await cid.call(
            "POST", "/api/v1/posts", {"media_ids": [media], "tagged_users": [tagged]}
        )
        tags[tagged] = (status, doc["error"]["code"], doc["error"]["message"].replace(tagged, "#"))
    assert tags[bea_id] == tags[NO_SUCH_ID] and tags[bea_id][:2] == (400, "no_such_user")
    status, doc, _ = await cid.call(
        "POST", "/api/v1/posts", {"media_ids": [media], "caption": "hi @bea"}
    )
    assert status == 201, doc  # the refused posts attached nothing
    # Following either way answers as following no user.
    nobody = await cid.call("POST", "/api/v1/follows", {"followee_id": NO_SUCH_ID})
    for client, other in ((cid, bea_id), (bea, cid_id)):
        status, doc, _ = await client.call("POST", "/api/v1/follows", {"followee_id": other})
        assert (status, doc) == (nobody[0], nobody[1]) and status == 404
    assert (await cid.call("PUT", f"/api/v1/posts/{bpid}/like"))[0] == 404
    assert (await comment(cid, bpid, "still here?"))[0] == 404
    groups, unread = await notifications(bea)
    assert actors(groups) == {ann_id} and unread == 1
    groups, _ = await notifications(cid)
    assert bea_id not in actors(groups)

    # cid may still delete their own comment on bea's post; bea any comment on hers; ann
    # neither.
    path = f"/api/v1/posts/{bpid}/comments/"
    assert (await ann.call("DELETE", path + c_on_bea["comment_id"]))[0] == 404
    assert (await cid.call("DELETE", path + c_on_bea["comment_id"]))[0] == 204
    assert (await cid.call("DELETE", path + c_on_bea["comment_id"]))[0] == 404
    assert (await bea.call("DELETE", path + c_on_bea2["comment_id"]))[0] == 204
    status, doc, _ = await bea.call("GET", f"/api/v1/posts/{bpid}")
    assert doc["comment_count"] == 0

    # Lifted, the block no longer hides what is left of what cid did (the follow it ended
    # is gone for good).
    assert (await bea.call("DELETE", f"/api/v1/blocks/{cid_id}"))[0] == 204
    groups, _ = await notifications(bea)
    assert cid_id in actors(groups) and any(g["post_id"] == cpid for g in groups)
    assert not any(g["kind"] == "follow" for g in groups)
