"""Sign-in throttles through the real API, with their counters in SQL (SQLite, PostgreSQL) or
Redis: per client address (behind a trusted proxy, the forwarded address), per account and
address, and per account over addresses new to it; two API apps on the same data count
together, and a restarted API still remembers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from social.config import SocialConfig
from tests.api.conftest import PASSWORD
from tests.social.conftest import Client, social_cluster, user

LIMITS = SocialConfig(
    sign_in_failures_per_address_max=6,
    sign_in_failures_per_account_address_max=3,
    sign_in_failures_per_account_max=4,
)


async def sign_in(client: Client, username: str, password: str) -> tuple[int, Any, Any]:
    return await client.call(
        "POST", "/api/v1/sessions", {"username": username, "password": password}
    )


def assert_throttled(answer: tuple[int, Any, Any], limit: int, window_s: int) -> None:
    status, doc, headers = answer
    assert status == 429 and doc["error"]["code"] == "rate_limited", doc
    assert headers["X-RateLimit-Limit"] == str(limit)
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(headers["Retry-After"]) <= window_s + 1
    assert headers["X-RateLimit-Reset"] == headers["Retry-After"]


@pytest.mark.parametrize(
    ("kind", "redis"), [("sqlite", False), ("postgresql", False), ("sqlite", True)]
)
async def test_failed_sign_ins_are_throttled_across_apps_and_restarts(
    kind: str, redis: bool, tmp_path: Path
) -> None:
    async with social_cluster(kind, tmp_path, worker=False, redis=redis, social=LIMITS) as cluster:
        env = cluster.env
        await user(env, "vic")  # signs in from 127.0.0.1: an address vic is known at
        await user(env, "wes")
        here_a = Client(env, None)
        async with cluster.another_api("api-b", trusted_proxies=("127.0.0.0/8",)) as b_url:
            here_b = Client(env, None, api_url=b_url)

            def at(address: str) -> Client:
                return Client(env, None, api_url=b_url, headers={"X-Forwarded-For": address})

            # Two apps, one counter: (vic, 127.0.0.1) fails on A, B, A; then even the right
            # password waits.
            for client in (here_a, here_b, here_a):
                status, doc, _ = await sign_in(client, "vic", "wrong password")
                assert status == 401 and doc["error"]["code"] == "bad_credentials"
            assert_throttled(await sign_in(here_b, "vic", PASSWORD), 3, 900)
            # That locks out only that address: vic signs in from another one.
            assert (await sign_in(at("198.51.100.1"), "vic", PASSWORD))[0] == 201
            # Guesses spread over new addresses meet the per-account limit (4)...
            for n in range(2, 6):
                assert (await sign_in(at(f"198.51.100.{n}"), "vic", "guess"))[0] == 401
            assert_throttled(await sign_in(at("198.51.100.6"), "vic", PASSWORD), 4, 900)
            # ...which never applies where vic signed in before.
            assert (await sign_in(at("198.51.100.1"), "vic", PASSWORD))[0] == 201
            # A username that exists nowhere is throttled alike (no oracle).
            for _ in range(3):
                assert (await sign_in(at("203.0.113.9"), "ghost", "guess"))[0] == 401
            assert_throttled(await sign_in(at("203.0.113.9"), "ghost", "guess"), 3, 900)
            # Per address (6 an hour), over any accounts; a success in between is not
            # counted and resets nothing.
            for n in range(2):
                assert (await sign_in(at("203.0.113.20"), f"nobody{n}", "guess"))[0] == 401
            status, _, headers = await sign_in(at("203.0.113.20"), "wes", PASSWORD)
            assert status == 201 and headers["X-RateLimit-Limit"] == "6"
            assert headers["X-RateLimit-Remaining"] == "4"
            for n in range(2, 6):
                assert (await sign_in(at("203.0.113.20"), f"nobody{n}", "guess"))[0] == 401
            assert_throttled(await sign_in(at("203.0.113.20"), "wes", PASSWORD), 6, 3600)
            # A forged X-Forwarded-For entry left of the proxy's does not escape the limit.
            forged = at("1.2.3.4, 203.0.113.20")
            assert_throttled(await sign_in(forged, "wes", PASSWORD), 6, 3600)
        # A restarted API (a new app on the same data) still refuses.
        async with cluster.another_api("api-c") as c_url:
            restarted = Client(env, None, api_url=c_url)
            assert_throttled(await sign_in(restarted, "vic", PASSWORD), 3, 900)
