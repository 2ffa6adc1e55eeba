"""Sessions through the real API: listed with a public id, revoked one by one or all at
once, ended by a password change (the others) or by idleness; a use is written at most
once per session_touch_s."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from social.config import SocialConfig
from social.schema import sessions
from tests.api.conftest import PASSWORD, MediaEnv
from tests.social.conftest import Client, social_cluster, user

LIMITS = SocialConfig(
    sign_in_failures_per_account_address_max=3, sign_in_failures_per_account_max=4
)
NEW_PASSWORD = "a new horse battery"


async def sign_in(env: MediaEnv, password: str, agent: str = "test") -> tuple[int, str | None]:
    client = Client(env, None, headers={"User-Agent": agent})
    status, doc, _ = await client.call(
        "POST", "/api/v1/sessions", {"username": "sol", "password": password}
    )
    return status, doc.get("token")


async def works(client: Client) -> bool:
    status, _, _ = await client.call("GET", "/api/v1/accounts/me")
    assert status in (200, 401)
    return status == 200


async def last_used(env: MediaEnv, token: str) -> float:
    async with env.ctx.db.snapshot() as conn:
        return float(
            (
                await conn.execute(
                    sa.select(sessions.c.last_used_unix_s).where(
                        sessions.c.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
                    )
                )
            ).scalar_one()
        )


async def set_last_used(env: MediaEnv, token: str, when: float) -> None:
    async with env.ctx.db.transaction() as conn:
        await conn.execute(
            sessions.update()
            .where(sessions.c.token_sha256 == hashlib.sha256(token.encode()).hexdigest())
            .values(last_used_unix_s=when)
        )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_sessions_are_listed_revoked_and_ended_by_a_password_change(
    kind: str, tmp_path: Path
) -> None:
    async with social_cluster(kind, tmp_path, worker=False, social=LIMITS) as cluster:
        env = cluster.env
        _, first = await env.sign_up("sol")
        tokens = [first]
        for agent in ("phone/1.0", "laptop/2.0", "x" * 400):
            status, token = await sign_in(env, PASSWORD, agent)
            assert status == 201 and token
            tokens.append(token)
        mine = Client(env, tokens[1])
        status, doc, _ = await mine.call("GET", "/api/v1/sessions")
        assert status == 200
        listed = doc["sessions"]  # newest first
        assert [s["current"] for s in listed] == [False, False, True, False]
        assert [s["user_agent"] for s in listed[:3]] == ["x" * 300, "laptop/2.0", "phone/1.0"]
        assert {s["address"] for s in listed} == {"127.0.0.1"}
        assert all(s["created_at"].endswith("Z") and s["last_used_at"] for s in listed)
        ids = [s["session_id"] for s in listed]
        secrets = set(tokens) | {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
        assert len(set(ids)) == 4 and not any(i in s for i in ids for s in secrets)

        # Someone else's session id is no different from none.
        _, tim = await user(env, "tim")
        theirs = (await tim.call("GET", "/api/v1/sessions"))[1]["sessions"][0]["session_id"]
        for other in (theirs, "no-such-session", "current2"):
            status, doc, _ = await mine.call("DELETE", f"/api/v1/sessions/{other}")
            assert status == 404 and doc["error"]["code"] == "not_found"
        assert await works(tim)
        # One revoked by its id: only that one.
        assert (await mine.call("DELETE", f"/api/v1/sessions/{ids[1]}"))[0] == 204
        assert (await mine.call("DELETE", f"/api/v1/sessions/{ids[1]}"))[0] == 404
        assert [await works(Client(env, t)) for t in tokens] == [True, True, False, True]

        # A password change: bad input first (nothing changes), a wrong current password.
        path = "/api/v1/accounts/me/password"
        for body, code in [
            ({"current_password": PASSWORD, "new_password": "short"}, "bad_password"),
            ({"new_password": NEW_PASSWORD}, "bad_request"),
            ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "x": 1}, "bad_request"),
        ]:
            status, doc, _ = await mine.call("POST", path, body)
            assert (status, doc["error"]["code"]) == (400, code), doc
        body = {"current_password": "not it at all", "new_password": NEW_PASSWORD}
        status, doc, _ = await mine.call("POST", path, body)
        assert status == 403 and doc["error"]["code"] == "wrong_password"
        body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        status, doc, _ = await mine.call("POST", path, body)
        assert (status, doc) == (200, {"sessions_revoked": 2})
        assert [await works(Client(env, t)) for t in tokens] == [False, True, False, False]
        assert (await sign_in(env, PASSWORD))[0] == 401
        status, token = await sign_in(env, NEW_PASSWORD)
        assert status == 201 and token
        # Wrong current passwords count with failed sign-ins: (sol, 127.0.0.1) has two; the
        # third is the last the limit (3) lets through, then even the right one waits.
        body = {"current_password": PASSWORD, "new_password": "another one, longer"}
        assert (await mine.call("POST", path, body))[0] == 403
        body = {"current_password": NEW_PASSWORD, "new_password": "another one, longer"}
        status, doc, headers = await mine.call("POST", path, body)
        assert status == 429 and doc["error"]["code"] == "rate_limited"
        assert headers["X-RateLimit-Limit"] == "3" and int(headers["Retry-After"]) > 0

        # Signing out everywhere ends every session, this one too.
        assert (await mine.call("DELETE", "/api/v1/sessions"))[0] == 204
        assert not await works(mine) and not await works(Client(env, token))
        assert await works(tim)


async def test_idle_sessions_end_and_a_use_is_written_at_most_every_touch(
    social_env: MediaEnv,
) -> None:
    env = social_env
    tokens = [(await env.sign_up(name))[1] for name in ("ida", "ivo", "ivy")]
    idle, recent, stale = (Client(env, t) for t in tokens)
    now = time.time()
    # Unused for longer than session_idle_days_max (30): over, like a revoked session.
    await set_last_used(env, tokens[0], now - 31 * 86400)
    status, doc, _ = await idle.call("GET", "/api/v1/accounts/me")
    assert status == 401 and doc["error"]["code"] == "unauthorized"
    # Used within session_touch_s (300 s): a request reads, writes nothing.
    await set_last_used(env, tokens[1], now - 100)
    assert await works(recent)
    assert await last_used(env, tokens[1]) == now - 100
    # Longer ago: the use is recorded.
    await set_last_used(env, tokens[2], now - 29 * 86400)
    assert await works(stale)
    assert await last_used(env, tokens[2]) >= now
    status, doc, _ = await stale.call("GET", "/api/v1/sessions")
    assert status == 200 and len(doc["sessions"]) == 1
