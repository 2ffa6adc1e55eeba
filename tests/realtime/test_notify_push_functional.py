"""Like and comment notifications through the real broker, on SQLite and PostgreSQL: the
post's author's notifications topic gets them once the write committed, and a like whose
COMMIT fails (the route goes on and answers 200, taking it as a concurrent like) publishes
nothing. "Nothing" is shown by a later like's notification arriving while the failed one
never did: the API publishes over one connection with QoS 1, so the broker hands them to the
subscriber in the order published."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from social.config import SocialConfig
from tests.api.conftest import MediaEnv, media_env
from tests.directory.conftest import PG_URL, pg_schema
from tests.realtime.conftest import Broker, mqtt_client
from tests.realtime.test_push_functional import credentials, of_type
from tests.social.conftest import user

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["sqlite", "postgresql"])
async def push_env(
    request: pytest.FixtureRequest, tmp_path: Path, broker: Broker
) -> AsyncIterator[MediaEnv]:
    overrides = {"realtime": broker.config, "social": SocialConfig()}
    async with contextlib.AsyncExitStack() as stack:
        database: dict[str, str] = {}
        if request.param == "postgresql":
            schema = await stack.enter_async_context(pg_schema())
            database = {"database_url": PG_URL, "database_schema": schema}
        env = await stack.enter_async_context(media_env(tmp_path, overrides, **database))
        env.start_worker()
        yield env


async def fail_commits_of_likes_by(env: MediaEnv, actor_id: int) -> None:
    """Makes the COMMIT of any transaction that writes a like notification by `actor_id`
    fail: a trigger adds a row breaking a deferred foreign key, which the database checks
    only at COMMIT, so everything before it (the notification recorded) has happened."""
    db = env.ctx.db
    async with db.transaction() as conn:
        if db.is_sqlite:
            statements = [
                "CREATE TABLE fault_rows (user_id INTEGER REFERENCES users (user_id)"
                " DEFERRABLE INITIALLY DEFERRED)",
                "CREATE TRIGGER fault_like AFTER INSERT ON notifications"
                f" WHEN NEW.actor_id = {actor_id} AND NEW.kind = 'like'"
                " BEGIN INSERT INTO fault_rows VALUES (-1); END",
            ]
        else:
            statements = [
                "CREATE TABLE fault_rows (user_id BIGINT REFERENCES users (user_id)"
                " DEFERRABLE INITIALLY DEFERRED)",
                "CREATE FUNCTION fault_like() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.actor_id = {actor_id} AND NEW.kind = 'like' THEN"
                " INSERT INTO fault_rows VALUES (-1); END IF; RETURN NEW; END $$",
                "CREATE TRIGGER fault_like AFTER INSERT ON notifications"
                " FOR EACH ROW EXECUTE FUNCTION fault_like()",
            ]
        for statement in statements:
            await conn.execute(sa.text(statement))


async def test_likes_and_comments_notify_at_commit_and_a_rollback_publishes_nothing(
    push_env: MediaEnv, broker: Broker
) -> None:
    env = push_env
    ann_id, ann = await user(env, "ann")
    bea_id, bea = await user(env, "bea")
    cid_id, cid = await user(env, "cid")
    post = await ann.post("hello")
    like_path = f"/api/v1/posts/{post['post_id']}/like"
    a = await credentials(ann)
    async with mqtt_client(broker.files.port, a["username"], a["password"]) as ann_mq:
        assert await ann_mq.subscribe(a["topics"]["subscribe"])
        status, doc, _ = await bea.call("PUT", like_path)
        assert (status, doc["like_count"]) == (200, 1), doc
        got = await ann_mq.wait_for(of_type("notification", kind="like", actor_id=bea_id))
        [(topic, first)] = got
        assert topic == f"pinhole/u/{ann_id}/notifications"
        first_id = json.loads(first)["notification_id"]
        status, comment, _ = await bea.call(
            "POST", f"/api/v1/posts/{post['post_id']}/comments", {"text": "nice"}
        )
        assert status == 201, comment
        await ann_mq.wait_for(
            of_type("notification", kind="comment", comment_id=comment["comment_id"])
        )
        # cid's like fails at COMMIT; the route answers as for a concurrent like.
        await fail_commits_of_likes_by(env, int(cid_id))
        status, doc, _ = await cid.call("PUT", like_path)
        assert (status, doc["like_count"], doc["viewer_has_liked"]) == (200, 1, False), doc
        # The marker: bea's like again after an unlike, published after cid's request.
        status, _, _ = await bea.call("DELETE", like_path)
        assert status == 200
        status, doc, _ = await bea.call("PUT", like_path)
        assert (status, doc["like_count"]) == (200, 1), doc
        got = await ann_mq.wait_for(
            lambda t, p: (
                of_type("notification", kind="like", actor_id=bea_id)(t, p)
                and json.loads(p)["notification_id"] != first_id
            )
        )
        kinds = [(d["kind"], d["actor_id"]) for d in (json.loads(p) for _, p in got)]
        assert kinds == [("like", bea_id), ("comment", bea_id), ("like", bea_id)], kinds
    status, doc, _ = await ann.call("GET", "/api/v1/notifications")
    assert status == 200
    assert cid_id not in json.dumps(doc)
