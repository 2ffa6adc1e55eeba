"""The Mastodon client API's state on both backends (SQLite and PostgreSQL): OAuth apps,
tokens (a session plus its scopes), refresh rotation and revocation, a description set
before posting, and an Idempotency-Key replayed inside the post's transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.api.conftest import PASSWORD, MediaEnv
from tests.social.conftest import Client, user


async def _form(env: MediaEnv, path: str, data: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(env.api_url + path, data=data) as r:
        return r.status, await r.json()


async def test_tokens_descriptions_and_idempotent_posts(social_env: MediaEnv) -> None:
    env = social_env
    _, owner = await user(env, "ada")
    status, app = await _form(
        env,
        "/api/v1/apps",
        {"client_name": "t", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob", "scopes": "read write"},
    )
    assert status == 200, app
    client = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    status, token = await _form(
        env,
        "/oauth/token",
        client | {"grant_type": "password", "username": "ada", "password": PASSWORD},
    )
    assert status == 200 and token["scope"] == "read write", token
    masto = Client(env, token["access_token"])
    status, me, _ = await masto.call("GET", "/api/v1/accounts/verify_credentials")
    assert status == 200 and me["username"] == "ada"

    # A photo uploaded through pinhole's API, described and posted through Mastodon's.
    media_id = await owner.photo()
    status, doc, _ = await masto.call(
        "PUT", f"/api/v1/media/{media_id}", {"description": "boats at dawn"}
    )
    assert status == 200 and doc["description"] == "boats at dawn", doc
    body = {"status": "harbour", "media_ids": [media_id]}
    results = await asyncio.gather(
        *(_post_with_key(env, token["access_token"], body, key="same-key") for _ in range(3))
    )
    assert {r[0] for r in results} == {200}, results
    assert len({r[1]["id"] for r in results}) == 1  # concurrent retries made one post
    status, posts, _ = await owner.call("GET", f"/api/v1/users/{me['id']}/posts")
    assert status == 200 and [p["post_id"] for p in posts["posts"]] == [results[0][1]["id"]]
    assert posts["posts"][0]["media"][0]["alt_text"] == "boats at dawn"

    # Refresh rotates the pair; revocation ends the new one.
    status, fresh = await _form(
        env,
        "/oauth/token",
        client | {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
    )
    assert status == 200, fresh
    status, _, _ = await masto.call("GET", "/api/v1/accounts/verify_credentials")
    assert status == 401
    status, again = await _form(
        env,
        "/oauth/token",
        client | {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
    )
    assert status == 400 and again["error"] == "invalid_grant"
    renewed = Client(env, fresh["access_token"])
    status, _, _ = await renewed.call("GET", "/api/v1/timelines/home")
    assert status == 200
    status, _ = await _form(env, "/oauth/revoke", client | {"token": fresh["access_token"]})
    assert status == 200
    status, _, _ = await renewed.call("GET", "/api/v1/timelines/home")
    assert status == 401


async def _post_with_key(
    env: MediaEnv, token: str, body: dict[str, Any], *, key: str
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    async with (
        aiohttp.ClientSession() as http,
        http.post(env.api_url + "/api/v1/statuses", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()
