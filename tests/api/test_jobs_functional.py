"""Media jobs on real processes: a video through the whole ladder played by a stock HLS
client (ffmpeg), a worker killed with SIGKILL mid-video whose job completes after restart
without duplicates, dead letters and the `pinhole jobs` commands, expiry of unattached
media."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from common.jobs import JobStore
from common.jobs import schema as job_schema
from tests.api.conftest import MediaEnv, media_env
from tests.api.media_files import SECRET_PLACE, jpeg_with_gps, video_with_location
from tests.api.test_media import (
    fetch,
    get_media,
    live_needles,
    original_gone,
    original_photo_url,
    upload,
)
from tests.directory.conftest import SECRET, eventually
from transformer import jobs, schema

REPO = Path(__file__).resolve().parents[2]


def pinhole(*args: object, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *(str(a) for a in args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


async def job_row(env: MediaEnv, media_id: str) -> Any:
    async with env.ctx.db.snapshot() as conn:
        return (
            await conn.execute(
                sa.select(job_schema.jobs).where(
                    job_schema.jobs.c.queue == jobs.QUEUE,
                    job_schema.jobs.c.subject_id == int(media_id),
                )
            )
        ).one()


async def wait_ready(env: MediaEnv, media_id: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        status, doc = await get_media(env, media_id, wait_s=5)
        assert status == 200, doc
        if doc["status"] != "processing" or asyncio.get_running_loop().time() > deadline:
            return doc


@pytest.mark.timeout(240)
async def test_a_worker_killed_mid_video_leaves_nothing_published_and_the_job_completes(
    env: MediaEnv, tmp_path: Path
) -> None:
    clip = video_with_location(tmp_path / "clip.mp4", seconds=9, size="640x480")
    status, doc = await upload(env, clip.read_bytes(), filename="clip.mp4", media_type="video")
    assert status == 201, doc
    assert doc["media_type"] == "video" and 8.5 < doc["duration_s"] < 9.5
    media_id = doc["media_id"]

    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    config = tmp_path / "pinhole.toml"
    config.write_text("[media]\nlease_s = 1.5\n")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "--config", str(config), "worker", "serve",
         "--name", "doomed", "--media-data", str(env.media.data_dir),
         "--directory-url", env.directory_url, "--router-url", env.router_url,
         "--secret-file", str(secret_file),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:

        async def transcoding() -> bool:
            row = await job_row(env, media_id)
            children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
            listed = await asyncio.to_thread(children.read_text)
            return row.state == "running" and bool(listed.split())

        await eventually(transcoding, timeout_s=60, what="the worker to start ffmpeg")
        await asyncio.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its ffmpeg, like a crash
        await worker.wait()
    status, doc = await get_media(env, media_id)
    assert doc["status"] == "processing" and doc["urls"] == {} and doc["variants"] == {}

    env.start_worker(lease_s=1.5)
    doc = await wait_ready(env, media_id)
    assert doc["status"] == "ready", doc
    row = await job_row(env, media_id)
    assert row.state == "done" and row.attempts == 2

    master_url = doc["urls"]["hls"]
    code, ctype, master = await fetch(master_url)
    assert (code, ctype) == (200, "application/vnd.apple.mpegurl")
    text = master.decode()
    assert text.startswith("#EXTM3U") and "RESOLUTION=640x480" in text
    assert "RESOLUTION=1280x720" not in text  # never above the source
    rung_path = next(line for line in text.splitlines() if line.startswith("/p/"))
    code, ctype, rung = await fetch(env.router_url + rung_path)
    segment_paths = [line for line in rung.decode().splitlines() if line.startswith("/p/")]
    assert len(segment_paths) == 3  # 9 s in 4 s segments
    code, ctype, segment = await fetch(env.router_url + segment_paths[0])
    assert (code, ctype) == (200, "video/mp2t")
    assert SECRET_PLACE.encode() not in segment
    code, ctype, poster = await fetch(doc["variants"]["poster"]["formats"]["jpeg"])
    assert (code, ctype) == (200, "image/jpeg") and b"Exif" not in poster

    # A stock HLS client plays the whole ladder from the router.
    played = await asyncio.create_subprocess_exec(
        "ffmpeg", "-v", "error", "-i", master_url, "-map", "0:v:0", "-f", "null", "-",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(played.communicate(), 60)
    assert played.returncode == 0, err.decode()

    # One row per variant, each needle where its row says (no duplicates from attempt 1).
    async with env.ctx.db.snapshot() as conn:
        rows = (
            await conn.execute(
                sa.select(schema.variants).where(schema.variants.c.media_id == int(media_id))
            )
        ).all()
    keys = [(r.rendition, r.fmt) for r in rows]
    assert len(keys) == len(set(keys))


@pytest.mark.timeout(120)
async def test_dead_letters_are_listed_and_retried_by_the_jobs_commands(tmp_path: Path) -> None:
    async with media_env(tmp_path, attempts_max=2) as env:
        status, doc = await upload(env, jpeg_with_gps(400, 300))
        assert status == 201
        media_id = doc["media_id"]
        original = await original_photo_url(env, media_id)
        vid = int(original.split("/")[-4])
        # The original vanishes before any worker reads it: every attempt fails.
        await env.ctx.writer.delete(vid, int(media_id))
        await eventually(
            lambda: original_gone(env, media_id, original),
            timeout_s=20,
            what="the original's delete",
        )
        env.start_worker()

        async def dead() -> bool:
            return (await job_row(env, media_id)).state == "dead"

        await eventually(dead, timeout_s=30, what="the job to be dead-lettered")
        status, doc = await get_media(env, media_id)
        assert doc["status"] == "failed" and doc["error"]["code"] == "processing_failed"

        media_data = env.media.data_dir
        p = await asyncio.to_thread(pinhole, "jobs", "dead", "--json", "--media-data", media_data)
        assert p.returncode == 0, p.stderr
        listed = json.loads(p.stdout)
        assert [j["subject_id"] for j in listed["jobs"]] == [media_id]
        assert listed["jobs"][0]["attempts"] == 2 and "404" in listed["jobs"][0]["last_error"]
        assert listed["counts"]["media"]["dead"] == 1

        p = await asyncio.to_thread(pinhole, "jobs", "retry", "424242", "--media-data", media_data)
        assert p.returncode == 1 and p.stderr.strip().startswith("pinhole: not dead")
        for task in env.workers:  # hold the queue still while the retry is checked
            task.cancel()
        p = await asyncio.to_thread(
            pinhole, "jobs", "retry", media_id, "--json", "--media-data", media_data
        )
        assert p.returncode == 0 and json.loads(p.stdout)["requeued"] == [media_id], p.stderr
        p = await asyncio.to_thread(pinhole, "jobs", "list", "--json", "--media-data", media_data)
        doc = json.loads(p.stdout)
        assert doc["counts"]["media"]["queued"] == 1 and doc["jobs"][0]["attempts"] == 0
        status, media = await get_media(env, media_id)
        assert media["status"] == "processing"
        p = await asyncio.to_thread(pinhole, "jobs", "list", "--media-data", tmp_path / "nowhere")
        assert p.returncode == 1 and p.stderr.count("\n") == 1


async def _gone(url: str) -> bool:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status == 404


@pytest.mark.timeout(120)
async def test_unattached_media_expire_and_their_needles_are_deleted(tmp_path: Path) -> None:
    async with media_env(tmp_path, unattached_ttl_s=2.0, expire_interval_s=0.2) as env:
        status, doc = await upload(env, jpeg_with_gps(400, 300))
        assert status == 201
        env.start_worker()
        ready = await wait_ready(env, doc["media_id"], timeout_s=20)
        assert ready["status"] == "ready"
        original = await original_photo_url(env, doc["media_id"])
        photo_url = ready["variants"]["320"]["formats"]["webp"]
        assert (await fetch(photo_url))[0] == 200

        async def expired() -> bool:
            return (await get_media(env, doc["media_id"]))[0] == 404

        await eventually(expired, timeout_s=20, what="the media to expire")
        await eventually(lambda: _gone(photo_url), timeout_s=20, what="the variant's delete")
        await eventually(
            lambda: original_gone(env, doc["media_id"], original), timeout_s=20, what="the original"
        )

        async def no_needles() -> bool:
            return live_needles(env) == 0

        await eventually(no_needles, timeout_s=20, what="every replica's needles to go")
        stats = await JobStore(env.ctx.db).statistics(jobs.QUEUE)
        assert stats.as_json() == {"queued": 0, "running": 0, "done": 1, "dead": 0}
