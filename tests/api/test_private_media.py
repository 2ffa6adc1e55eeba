"""Privacy through the whole stack: originals reach only their owner, a private account's
photos travel as signed URLs that stop working after an unfollow within their expiry, and
turning private re-keys the photos so the public URLs handed out before answer 404."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.credentials import Purpose
from common.jobs import JobStore
from common.photo import ORIGINAL_RENDITION, parse_photo_path, photo_path
from tests.api.conftest import media_env
from tests.api.media_files import jpeg_with_gps, video_with_location
from tests.api.test_media import fetch, live_needles, original_photo_url
from tests.conftest import auth
from tests.directory.conftest import SECRET, eventually
from tests.social.conftest import Client, user
from transformer import jobs, media_store

# Short-lived signed URLs, so that an expiry can be waited out in a test.
TTL_S = 2.0
STEP_S = 1


async def _status(url: str, **headers: str) -> int:
    return (await fetch(url, **headers))[0]


async def _upload(client: Client, data: bytes) -> dict[str, Any]:
    media_id = await client.upload(data, "photo.jpg")
    return await _ready(client, media_id, timeout_s=10)


async def _post_url(client: Client, post_id: str) -> tuple[int, str | None]:
    status, doc, _ = await client.call("GET", f"/api/v1/posts/{post_id}")
    if status != 200:
        return status, None
    return status, str(doc["media"][0]["variants"]["640"]["formats"]["jpeg"])


async def test_an_original_reaches_its_owner_only(tmp_path: Path) -> None:
    async with media_env(tmp_path) as env:
        env.start_worker()
        _, owner = await user(env, "owner")
        _, other = await user(env, "other")
        original = jpeg_with_gps(640, 480)
        doc = await _upload(owner, original)
        # The owner downloads it through the API, byte-exact with its GPS position.
        status, content_type, body = await fetch(
            env.api_url + doc["original_url"], Authorization=f"Bearer {owner.token}"
        )
        assert (status, body) == (200, original) and content_type == "image/jpeg"
        # Nobody else: not another user, not without a session.
        assert await _status(env.api_url + doc["original_url"]) == 401
        other_auth = {"Authorization": f"Bearer {other.token}"}
        assert await _status(env.api_url + doc["original_url"], **other_auth) == 404
        # Every public variant URL with its rendition turned into the original's: 404, the
        # same bytes as an absent photo.
        variant = doc["variants"]["640"]["formats"]["jpeg"]
        ref = parse_photo_path(variant.removeprefix(env.router_url))
        absent = await fetch(
            env.router_url + photo_path(ref.volume_id, ref.key + 1, ref.cookie, 640, ref.fmt)
        )
        for forged in (
            re.sub(r"/640\.jpg$", "/0.jpg", variant),
            re.sub(r"/640\.jpg$", "/0", variant),
            re.sub(r"/640\.jpg$", "/0.heic", variant),
        ):
            got = await fetch(forged)
            assert got[0] == 404 and got[2] == absent[2] and b"GPS" not in got[2]
        # The original's own URL (only the database knows its cookie) needs the internal
        # read credential, which no client holds.
        internal = await original_photo_url(env, doc["media_id"])
        assert parse_photo_path(internal.split(env.router_url)[1]).rendition == ORIGINAL_RENDITION
        assert internal.split("/")[-2] != variant.split("/")[-2]  # a cookie of its own
        assert await _status(internal) == 404
        assert await _status(internal, **auth(SECRET, Purpose.READ)) == 200


async def test_a_followers_signed_url_stops_after_an_unfollow(tmp_path: Path) -> None:
    async with media_env(tmp_path, signed_url_ttl_s=TTL_S, signed_url_step_s=STEP_S) as env:
        env.start_worker()
        owner_id, owner = await user(env, "ana", private=True)
        _, fan = await user(env, "fan")
        _, stranger = await user(env, "stranger")
        status, doc, _ = await fan.call("POST", "/api/v1/follows", {"followee_id": owner_id})
        assert status == 201 and doc["state"] == "requested"
        fan_id = (await fan.me())["user_id"]
        status, _, _ = await owner.call("POST", f"/api/v1/follow_requests/{fan_id}/approve")
        assert status == 204
        post = await owner.post("private")
        status, url = await _post_url(fan, post["post_id"])
        assert status == 200 and url is not None
        assert "?e=" in url and "&s=" in url  # signed, not the public form
        got_status, _, body = await fetch(url)
        assert got_status == 200 and body[:2] == b"\xff\xd8"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.headers["Cache-Control"].startswith("private, max-age=")
        # The public form of the same variant (the query dropped) serves nothing.
        assert await _status(url.split("?")[0]) == 404
        assert (await _post_url(stranger, post["post_id"]))[0] == 404

        status, _, _ = await fan.call("DELETE", f"/api/v1/follows/{owner_id}")
        assert status == 204
        unfollowed = time.monotonic()
        # The API stops handing the post out at once...
        assert (await _post_url(fan, post["post_id"]))[0] == 404
        # ...and the URL the fan still holds stops within the expiry window.

        async def refused() -> bool:
            return await _status(url) == 403

        await eventually(refused, timeout_s=TTL_S + STEP_S + 5, what="the signed URL to expire")
        assert time.monotonic() - unfollowed <= TTL_S + STEP_S + 5
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert (await r.json())["error"]["code"] == "url_expired"


@pytest.mark.timeout(180)
async def test_turning_private_rekeys_and_kills_the_public_urls(tmp_path: Path) -> None:
    async with media_env(tmp_path, signed_url_ttl_s=60.0) as env:
        env.start_worker()
        _, owner = await user(env, "bea")
        _, fan = await user(env, "fan2")
        post = await owner.post("public for now")
        status, public_url = await _post_url(fan, post["post_id"])
        assert status == 200 and public_url is not None and "?" not in public_url
        assert await _status(public_url) == 200
        media_id = post["media"][0]["media_id"]
        before = await media_store.get(env.ctx.db, int(media_id))
        assert before is not None
        needles_before = live_needles(env)

        status, _, _ = await owner.call("PATCH", "/api/v1/accounts/me", {"is_private": True})
        assert status == 200

        async def rekeyed() -> bool:
            got = await media_store.get(env.ctx.db, int(media_id))
            return got is not None and got[0].cookie_hex != before[0].cookie_hex

        await eventually(rekeyed, timeout_s=60, what="the re-key")
        after = await media_store.get(env.ctx.db, int(media_id))
        assert after is not None
        row, rows = after
        assert row.pending_cookie_hex is None and row.status == "ready"
        # Every published variant moved to a new volume under the new cookie; the original
        # stayed where it was, under its own cookie.
        old = {(r.rendition, r.fmt): r.volume_id for r in before[1]}
        new = {(r.rendition, r.fmt): r.volume_id for r in rows}
        assert old.keys() == new.keys()
        for where, vid in new.items():
            assert (vid == old[where]) == (where[0] == ORIGINAL_RENDITION), where
        assert row.original_cookie_hex == before[0].original_cookie_hex

        # The public URL handed out before answers 404 in every tier, once the deletes land.
        async def dead() -> bool:
            return await _status(public_url) == 404

        await eventually(dead, timeout_s=30, what="the old public URL to die")
        # The owner's own view is signed now and works; so does the original's download.
        status, url = await _post_url(owner, post["post_id"])
        assert status == 200 and url is not None and "&s=" in url
        assert await _status(url) == 200
        download = env.api_url + f"/api/v1/media/{media_id}/original"
        assert await _status(download, Authorization=f"Bearer {owner.token}") == 200

        # The old needles are gone from every replica: as many live needles as before.
        async def old_needles_gone() -> bool:
            return live_needles(env) == needles_before

        await eventually(old_needles_gone, timeout_s=30, what="the old needles' deletes")
        stats = await JobStore(env.ctx.db).statistics(jobs.QUEUE)
        assert stats.as_json() == {"queued": 0, "running": 0, "done": 1, "dead": 0}
        # A second switch back and forth re-keys again and leaves everything working.
        assert (await owner.call("PATCH", "/api/v1/accounts/me", {"is_private": False}))[0] == 200
        status, public_again = await _post_url(fan, post["post_id"])
        assert status == 200 and public_again is not None and "?" not in public_again
        assert await _status(public_again) == 200


async def _ready(client: Client, media_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, doc, _ = await client.call("GET", f"/api/v1/media/{media_id}", wait_s="10")
        assert status == 200, doc
        if doc["status"] != "processing" or time.monotonic() > deadline:
            return dict(doc)


async def _plays(url: str) -> tuple[int, str]:
    """A stock HLS client (ffmpeg) plays the whole video at `url`: (exit code, errors)."""
    played = await asyncio.create_subprocess_exec(
        "ffmpeg", "-v", "error", "-i", url, "-map", "0:v:0", "-f", "null", "-",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(played.communicate(), 60)
    return played.returncode or 0, err.decode()


@pytest.mark.timeout(240)
async def test_a_rekeyed_video_plays_from_its_signed_playlists(tmp_path: Path) -> None:
    async with media_env(tmp_path, signed_url_ttl_s=120.0) as env:
        env.start_worker()
        _, owner = await user(env, "cam")
        clip = video_with_location(tmp_path / "clip.mp4", seconds=5)
        media_id = await owner.upload(clip.read_bytes(), "clip.mp4", media_type="video")
        doc = await _ready(owner, media_id, timeout_s=120)
        assert doc["status"] == "ready", doc
        status, post, _ = await owner.call("POST", "/api/v1/posts", {"media_ids": [media_id]})
        assert status == 201, post
        old_master = doc["urls"]["hls"]
        master_text = (await fetch(old_master))[2].decode()
        old_rung = env.router_url + next(
            line for line in master_text.splitlines() if line.startswith("/p/")
        )
        assert await _plays(old_master) == (0, "")

        status, _, _ = await owner.call("PATCH", "/api/v1/accounts/me", {"is_private": True})
        assert status == 200

        async def old_gone() -> bool:
            return await _status(old_master) == 404 and await _status(old_rung) == 404

        await eventually(old_gone, timeout_s=90, what="the old playlists to die")
        status, doc, _ = await owner.call("GET", f"/api/v1/media/{media_id}")
        new_master = doc["urls"]["hls"]
        assert "&s=" in new_master
        code, ctype, body = await fetch(new_master)
        assert (code, ctype) == (200, "application/vnd.apple.mpegurl")
        lines = [line for line in body.decode().splitlines() if line.startswith("/p/")]
        assert lines and all("&s=" in line for line in lines)  # every rung signed
        got = await media_store.get(env.ctx.db, int(media_id))
        assert got is not None
        assert got[0].cookie_hex not in body.decode()  # the real cookie never shows
        assert await _plays(new_master) == (0, "")
