"""Story wake-ups through the real broker: a follower's notifications topic gets a `story`
event when an author they follow posts, and a close-friends story reaches only the list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from social.config import SocialConfig
from tests.api.conftest import MediaEnv, media_env
from tests.realtime.conftest import Broker, mqtt_client
from tests.realtime.test_push_functional import credentials, of_type
from tests.social.conftest import user

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def push_env(tmp_path: Path, broker: Broker) -> AsyncIterator[MediaEnv]:
    overrides = {"realtime": broker.config, "social": SocialConfig()}
    async with media_env(tmp_path, overrides) as env:
        yield env


async def test_story_events_reach_followers_who_may_see_them(
    push_env: MediaEnv, broker: Broker
) -> None:
    env = push_env
    ann_id, ann = await user(env, "ann")
    _, bea = await user(env, "bea")
    cid_id, cid = await user(env, "cid")
    for who in (bea, cid):
        status, doc, _ = await who.call("POST", "/api/v1/follows", {"followee_id": ann_id})
        assert status in (200, 201), doc
    status, doc, _ = await ann.call("POST", "/api/v1/close_friends", {"user_id": cid_id})
    assert status == 201, doc
    b, c = await credentials(bea), await credentials(cid)
    port = broker.files.port
    async with (
        mqtt_client(port, b["username"], b["password"]) as bea_mq,
        mqtt_client(port, c["username"], c["password"]) as cid_mq,
    ):
        assert await bea_mq.subscribe(b["topics"]["notifications"])
        assert await cid_mq.subscribe(c["topics"]["notifications"])
        posted = []
        for audience in ("close_friends", "followers"):
            media_id = await ann.photo(ready=False)
            status, doc, _ = await ann.call(
                "POST", "/api/v1/stories", {"media_id": media_id, "audience": audience}
            )
            assert status == 201, doc
            posted.append(doc["story_id"])
        inner, public = posted
        await cid_mq.wait_for(of_type("story", story_id=public))
        got = await cid_mq.wait_for(of_type("story", story_id=inner))
        # bea is not a close friend: once the later public story arrived (one publisher,
        # one topic, QoS 1: in order), the close-friends one would have been before it.
        got_bea = await bea_mq.wait_for(of_type("story", story_id=public))
    stories_bea = [json.loads(p)["story_id"] for _, p in got_bea if b'"story"' in p]
    assert stories_bea == [public]
    event = next(json.loads(p) for _, p in got if json.loads(p)["story_id"] == inner)
    assert event["author_id"] == ann_id and event["type"] == "story"
