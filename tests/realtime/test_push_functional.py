"""Real-time push through real processes: the API, a Mosquitto broker started from
pinhole's generated configuration, and paho clients with the credentials the API issued.

- A user's credentials reach only that user's topics: subscriptions to another user's
  topics are refused, wildcards included, and nothing of theirs arrives.
- Messages, reactions and notifications are published after commit, QoS 1.
- Typing is relayed to the thread's other members only, and never from a non-member.
- Signing out revokes the credentials: the broker drops the client and refuses it again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from social.config import SocialConfig
from tests.api.conftest import MediaEnv, media_env
from tests.realtime.conftest import Broker, mqtt_client
from tests.social.conftest import Client, user

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def push_env(tmp_path: Path, broker: Broker) -> AsyncIterator[MediaEnv]:
    overrides = {"realtime": broker.config, "social": SocialConfig()}
    async with media_env(tmp_path, overrides) as env:
        yield env


async def credentials(client: Client) -> dict[str, Any]:
    status, doc, _ = await client.call("POST", "/api/v1/realtime/credentials")
    assert status == 201, doc
    return dict(doc)


def of_type(event_type: str, /, **fields: str) -> Any:
    def match(topic: str, payload: bytes) -> bool:
        doc = json.loads(payload)
        return bool(doc["type"] == event_type and all(doc.get(k) == v for k, v in fields.items()))

    return match


async def test_no_one_reads_another_users_topics(push_env: MediaEnv, broker: Broker) -> None:
    env = push_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    a, b = await credentials(ann), await credentials(bea)
    assert a["topics"]["subscribe"] == f"pinhole/u/{ann_id}/#"
    port = broker.files.port
    async with (
        mqtt_client(port, a["username"], a["password"]) as ann_mq,
        mqtt_client(port, b["username"], b["password"]) as bea_mq,
    ):
        assert not (await ann_mq.connected()).is_failure
        assert not (await bea_mq.connected()).is_failure
        assert await ann_mq.subscribe(a["topics"]["subscribe"])
        assert await bea_mq.subscribe(b["topics"]["inbox"])
        for stolen in (
            f"pinhole/u/{ann_id}/inbox",
            f"pinhole/u/{ann_id}/#",
            "pinhole/u/+/inbox",
            "pinhole/u/#",
            "pinhole/#",
            "#",
            "+/+/+/inbox",
            f"$share/x/pinhole/u/{ann_id}/inbox",
            "pinhole/in/+/typing/+",
        ):
            assert not await bea_mq.subscribe(stolen), stolen
        # bea writes to ann: ann's inbox, then bea's own (the sender's echo) are published
        # in that order, so once bea has her echo, anything of ann's would be there too.
        status, sent, _ = await bea.call(
            "POST",
            "/api/v1/messages",
            {"recipient_ids": [ann_id], "client_id": "c1", "text": "hi"},
        )
        assert status == 201, sent
        await ann_mq.wait_for(of_type("message", message_id=sent["message_id"]))
        got = await bea_mq.wait_for(of_type("message", message_id=sent["message_id"]))
        assert [t for t, _ in got] == [f"pinhole/u/{bea_id}/inbox"]
        doc = json.loads(got[0][1])
        assert doc["thread_id"] == sent["thread_id"] and doc["seq"] == 1
        assert "text" not in doc  # a wake-up, never the content

    # A client id of someone else's credentials, or a username of wildcards, is refused.
    async with mqtt_client(port, a["username"], a["password"], "other-id") as wrong_id:
        assert (await wrong_id.connected()).is_failure
    for name in ("+", "#", f"pinhole/u/{ann_id}/#"):
        async with mqtt_client(port, name, a["password"]) as wild:
            assert (await wild.connected()).is_failure


async def test_events_and_typing_reach_members_only(push_env: MediaEnv, broker: Broker) -> None:
    env = push_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    eve_id, eve = await user(env, "eve")
    port = broker.files.port
    a, b, e = await credentials(ann), await credentials(bea), await credentials(eve)
    status, first, _ = await ann.call(
        "POST", "/api/v1/messages", {"recipient_ids": [bea_id], "client_id": "1", "text": "x"}
    )
    thread = first["thread_id"]
    status, eves, _ = await eve.call(
        "POST", "/api/v1/messages", {"recipient_ids": [ann_id], "client_id": "1", "text": "y"}
    )
    async with (
        mqtt_client(port, a["username"], a["password"]) as ann_mq,
        mqtt_client(port, b["username"], b["password"]) as bea_mq,
        mqtt_client(port, e["username"], e["password"]) as eve_mq,
    ):
        for mq, creds in ((ann_mq, a), (bea_mq, b), (eve_mq, e)):
            assert await mq.subscribe(creds["topics"]["subscribe"])
        # eve (no member of ann-bea) publishes typing in it, and on ann's behalf: dropped.
        eve_mq.publish(f"pinhole/in/{eve_id}/typing/{thread}", b"")
        eve_mq.publish(f"pinhole/in/{ann_id}/typing/{thread}", b"")
        # ann types in her thread with bea: bea hears it.
        ann_mq.publish(f"pinhole/in/{ann_id}/typing/{thread}", b"", qos=1)
        got = await bea_mq.wait_for(of_type("typing", thread_id=thread, user_id=ann_id))
        assert [json.loads(p)["user_id"] for t, p in got if b"typing" in p] == [ann_id]
        # Reactions go to the thread topic of both members.
        status, _, _ = await bea.call(
            "PUT",
            f"/api/v1/threads/{thread}/messages/{first['message_id']}/reaction",
            {"emoji": "ok"},
        )
        assert status == 200
        await ann_mq.wait_for(of_type("reaction", message_id=first["message_id"]))
        # A follow notifies on the notifications topic, after its commit.
        status, _, _ = await bea.call("POST", "/api/v1/follows", {"followee_id": ann_id})
        assert status == 201
        got = await ann_mq.wait_for(of_type("notification", kind="follow", actor_id=bea_id))
        assert (f"pinhole/u/{ann_id}/notifications") in [t for t, _ in got]
        # Through the REST typing route too; eve's thread with ann is not bea's business.
        status, _, _ = await ann.call("POST", f"/api/v1/threads/{eves['thread_id']}/typing")
        assert status == 204
        await eve_mq.wait_for(of_type("typing", thread_id=eves["thread_id"]))
        assert not any(b"typing" in p and eves["thread_id"].encode() in p for _, p in bea_mq.got)


async def test_sign_out_revokes_broker_credentials(push_env: MediaEnv, broker: Broker) -> None:
    env = push_env
    _, ann = await user(env, "ann")
    a = await credentials(ann)
    port = broker.files.port
    async with mqtt_client(port, a["username"], a["password"]) as mq:
        assert not (await mq.connected()).is_failure
        status, _, _ = await ann.call("DELETE", "/api/v1/sessions/current")
        assert status == 204
        # The plugin kicks the deleted client at once.
        import asyncio

        assert await asyncio.to_thread(mq.disconnected.wait, 10.0)
    async with mqtt_client(port, a["username"], a["password"]) as again:
        assert (await again.connected()).is_failure
